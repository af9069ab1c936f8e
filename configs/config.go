// Package configs holds the daemon's configuration: the commented default file built into the
// binary, the overlay of a user file and SLUICE_* environment variables, and validation that
// names the file, line and key of every mistake.
package configs

import (
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-media/sluice/cluster"
	"github.com/sluice-media/sluice/egress"
	"github.com/sluice-media/sluice/egress/hls"
	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/ingest/rtsp"
	"github.com/sluice-media/sluice/ingest/srt"
	"github.com/sluice-media/sluice/recorder"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/netguard"
	"github.com/sluice-media/sluice/sfu/rtc"
	"github.com/sluice-media/sluice/webhooks"
)

// Default is the built-in configuration file, documenting every key with its default.
//
//go:embed sluice.yaml
var Default []byte

// Config is the whole daemon configuration. Each section belongs to the package that uses it.
type Config struct {
	Node      Node                   `yaml:"node"`
	Log       Log                    `yaml:"log"`
	HTTP      HTTP                   `yaml:"http"`
	RTMP      rtmp.Config            `yaml:"rtmp"`
	RTSP      rtsp.Config            `yaml:"rtsp"`
	SRT       srt.Config             `yaml:"srt"`
	HLS       hls.Config             `yaml:"hls"`
	WebRTC    rtc.Config             `yaml:"webrtc"`
	Auth      auth.Config            `yaml:"auth"`
	Rooms     sfu.Config             `yaml:"rooms"`
	Limits    sfu.Limits             `yaml:"limits"`
	Ingests   []ingest.Definition    `yaml:"ingests"`
	Recording recorder.Config        `yaml:"recording"`
	Storage   recorder.StorageConfig `yaml:"storage"`
	Broadcast egress.BroadcastConfig `yaml:"broadcast"`
	Events    webhooks.EventsConfig  `yaml:"events"`
	Webhooks  webhooks.Config        `yaml:"webhooks"`
	Outbound  netguard.Config        `yaml:"outbound"`
	Transcode egress.TranscodeConfig `yaml:"transcode"`
	Cluster   cluster.Config         `yaml:"cluster"`
}

// Node is the `node:` section.
type Node struct {
	Name    string `yaml:"name"`
	DataDir string `yaml:"data_dir"`
}

// Log is the `log:` section.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// HTTP is the `http:` section.
type HTTP struct {
	Listen string `yaml:"listen"`
	TLS    struct {
		CertFile string `yaml:"cert_file"`
		KeyFile  string `yaml:"key_file"`
	} `yaml:"tls"`
	// MaxConns caps open HTTP connections; 0 is a quarter of the file-descriptor limit. A larger
	// value is cut to half the limit, so media and the event store always keep a reserve.
	MaxConns int `yaml:"max_conns"`
	// MaxConnsPerIP caps open HTTP connections from one address (0 = no cap of its own).
	MaxConnsPerIP int `yaml:"max_conns_per_ip"`
	// IdleTimeout closes a keep-alive connection that sends no new request.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// BodyTimeout is how long a request body may take to arrive in full.
	BodyTimeout time.Duration `yaml:"body_timeout"`
	// AllowedOrigins are the web origins ("https://app.example.com") whose pages may call the
	// API from a browser; WHIP and WHEP take every origin.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// MetricsAllow are addresses or CIDR prefixes (a scraper) that may read /metrics without an
	// admin token.
	MetricsAllow []string `yaml:"metrics_allow"`
}

// Options say where Load reads from.
type Options struct {
	// File is the user's config file, read on top of the default ("" for none).
	File string
	// Env returns environment variables (os.LookupEnv when nil).
	Env func(string) (string, bool)
	// DataDir, when set, overrides node.data_dir (the --data-dir flag).
	DataDir string
}

// Error is a configuration mistake: where it is and what is wrong.
type Error struct {
	File string // file name, or "environment"
	Line int    // 0 when unknown
	Key  string // dotted path: "webrtc.port"
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Key != "" {
		b.WriteString(": " + e.Key)
	}
	b.WriteString(": " + e.Msg)
	return b.String()
}

// Load builds the configuration: the built-in default, then opts.File, then SLUICE_*
// variables, then opts.DataDir; and validates the result.
func Load(opts Options) (*Config, error) {
	if opts.Env == nil {
		opts.Env = os.LookupEnv
	}
	var cfg Config
	lines := map[string]source{}
	if err := overlay(&cfg, Default, "built-in sluice.yaml", lines); err != nil {
		return nil, err
	}
	if opts.File != "" {
		data, err := os.ReadFile(opts.File)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if err := overlay(&cfg, data, opts.File, lines); err != nil {
			return nil, err
		}
	}
	if err := applyEnv(&cfg, opts.Env, lines); err != nil {
		return nil, err
	}
	if opts.DataDir != "" {
		cfg.Node.DataDir = opts.DataDir
		lines["node.data_dir"] = source{file: "--data-dir"}
	}
	if err := cfg.validate(lines); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// source is where a key's value came from.
type source struct {
	file string
	line int
}

func overlay(cfg *Config, data []byte, file string, lines map[string]source) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return &Error{File: file, Line: yamlLine(err), Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if len(doc.Content) == 0 {
		return nil // empty file
	}
	root := doc.Content[0]
	if err := check(root, typeOf(cfg), "", file, lines); err != nil {
		return err
	}
	if err := root.Decode(cfg); err != nil {
		return &Error{File: file, Msg: err.Error()}
	}
	return nil
}

// RecordingsDir returns recording.dir, defaulting to <data_dir>/recordings.
func (c *Config) RecordingsDir() string {
	if c.Recording.Dir != "" {
		return c.Recording.Dir
	}
	return filepath.Join(c.Node.DataDir, "recordings")
}

// SlogLevel returns log.level as a slog level.
func (c *Config) SlogLevel() slog.Level {
	switch c.Log.Level {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

type validator interface{ Validate() error }

func (c *Config) validate(lines map[string]source) error {
	sections := []struct {
		key string
		v   validator
	}{
		{"node", c.Node}, {"log", c.Log}, {"http", c.HTTP}, {"rtmp", c.RTMP}, {"rtsp", c.RTSP}, {"srt", c.SRT}, {"hls", c.HLS},
		{"webrtc", c.WebRTC}, {"auth", c.Auth}, {"rooms", c.Rooms}, {"limits", c.Limits}, {"recording", c.Recording}, {"storage", c.Storage},
		{"broadcast", c.Broadcast}, {"events", c.Events}, {"webhooks", c.Webhooks}, {"transcode", c.Transcode}, {"outbound", c.Outbound},
		{"cluster", c.Cluster},
	}
	for _, s := range sections {
		if err := s.v.Validate(); err != nil {
			return located(s.key, err, lines)
		}
	}
	if len(c.Cluster.Peers) > 0 && c.Events.NATSURL != "" {
		return located("cluster.peers", errors.New("set either cluster.peers (embedded servers route to each other) or events.nats_url (an external NATS cluster), not both"), lines)
	}
	ids := map[string]bool{}
	for i, d := range c.Ingests {
		key := fmt.Sprintf("ingests.%d", i)
		if err := d.Validate(); err != nil {
			return located(key, err, lines)
		}
		if d.ID == "" {
			return located(key, errors.New("id: every ingest in the config needs an id"), lines)
		}
		if ids[d.ID] {
			return located(key, fmt.Errorf("id: %q is used twice", d.ID), lines)
		}
		ids[d.ID] = true
	}
	return nil
}

// located turns a section's "key: message" error into an Error at the key's line.
func located(section string, err error, lines map[string]source) error {
	msg := err.Error()
	key := section
	if k, rest, ok := strings.Cut(msg, ": "); ok && !strings.ContainsAny(k, " \"") {
		key, msg = section+"."+k, rest
	}
	src := lookup(lines, key)
	return &Error{File: src.file, Line: src.line, Key: key, Msg: msg}
}

// lookup finds where key (or its closest parent) was set.
func lookup(lines map[string]source, key string) source {
	for k := key; k != ""; {
		if s, ok := lines[k]; ok {
			return s
		}
		i := strings.LastIndexByte(k, '.')
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return source{file: "config"}
}

// Validate checks the node section.
func (n Node) Validate() error {
	if n.DataDir == "" {
		return errors.New("data_dir: must not be empty")
	}
	return nil
}

// Validate checks the log section.
func (l Log) Validate() error {
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("level: %q is not debug, info, warn or error", l.Level)
	}
	if l.Format != "text" && l.Format != "json" {
		return fmt.Errorf("format: %q is not text or json", l.Format)
	}
	return nil
}

// Validate checks the http section.
func (h HTTP) Validate() error {
	if h.Listen == "" {
		return errors.New("listen: must not be empty")
	}
	if (h.TLS.CertFile == "") != (h.TLS.KeyFile == "") {
		return errors.New("tls: cert_file and key_file go together")
	}
	if h.MaxConns < 0 {
		return errors.New("max_conns: must not be negative")
	}
	if h.MaxConnsPerIP < 0 {
		return errors.New("max_conns_per_ip: must not be negative")
	}
	if h.IdleTimeout <= 0 {
		return errors.New("idle_timeout: must be positive")
	}
	if h.BodyTimeout <= 0 {
		return errors.New("body_timeout: must be positive")
	}
	for i, o := range h.AllowedOrigins {
		if err := api.ValidateOrigin(o); err != nil {
			return fmt.Errorf("allowed_origins.%d: %w", i, err)
		}
	}
	for i, a := range h.MetricsAllow {
		if _, err := netguard.ParsePrefix(a); err != nil {
			return fmt.Errorf("metrics_allow.%d: %w", i, err)
		}
	}
	return nil
}
