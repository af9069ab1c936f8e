package configs

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/egress"
	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/ingest/rtsp"
	"github.com/sluice-media/sluice/recorder"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/rtc"
	"github.com/sluice-media/sluice/webhooks"
)

func noEnv(string) (string, bool) { return "", false }

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The built-in file is the documentation of the defaults: it must say exactly what each
// package's DefaultConfig says.
func TestDefaultFileMatchesPackageDefaults(t *testing.T) {
	cfg, err := Load(Options{Env: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"rooms", cfg.Rooms, sfu.DefaultConfig()},
		{"limits", cfg.Limits, sfu.DefaultLimits()},
		{"webrtc", cfg.WebRTC, rtc.DefaultConfig()},
		{"rtmp", cfg.RTMP, rtmp.DefaultConfig()},
		{"rtsp", cfg.RTSP, rtsp.DefaultConfig()},
		{"recording", cfg.Recording, recorder.DefaultConfig()},
		{"storage", cfg.Storage, recorder.DefaultStorageConfig()},
		{"broadcast", cfg.Broadcast, egress.DefaultBroadcastConfig()},
		{"transcode", cfg.Transcode, egress.DefaultTranscodeConfig()},
		{"events", cfg.Events, webhooks.DefaultEventsConfig()},
		{"webhooks", cfg.Webhooks, webhooks.DefaultConfig()},
	} {
		if !reflect.DeepEqual(normalize(tc.got), normalize(tc.want)) {
			t.Errorf("%s: sluice.yaml gives %+v, package default is %+v", tc.name, tc.got, tc.want)
		}
	}
	if cfg.HTTP.Listen != ":8800" || cfg.Node.DataDir != "./data" || !cfg.Auth.OpenMode() {
		t.Errorf("node/http/auth defaults: %+v %+v", cfg.Node, cfg.HTTP)
	}
}

// normalize treats nil and empty slices alike (YAML `[]` decodes to an empty slice).
func normalize(v any) any {
	rv := reflect.ValueOf(v)
	out := reflect.New(rv.Type()).Elem()
	out.Set(rv)
	for i := range out.NumField() {
		f := out.Field(i)
		if f.Kind() == reflect.Slice && f.Len() == 0 && f.CanSet() {
			f.Set(reflect.Zero(f.Type()))
		}
	}
	return out.Interface()
}

func TestOverlayAndEnv(t *testing.T) {
	file := writeFile(t, "http:\n  listen: \":9000\"\nrooms:\n  empty_timeout: 30s\nauth:\n  keys:\n    app: 0123456789abcdef0123456789abcdef\n")
	cfg, err := Load(Options{File: file, DataDir: "/srv/sluice", Env: envOf(map[string]string{
		"SLUICE_WEBRTC_PUBLIC_IPS":     "203.0.113.7, 198.51.100.2",
		"SLUICE_RTSP_TRANSPORTS":       "[tcp]",
		"SLUICE_EVENTS_RETENTION":      "24h",
		"SLUICE_TRANSCODE_ENABLED":     "false",
		"SLUICE_NODE_NAME":             "edge-1",
		"SLUICE_WEBHOOKS_ENDPOINTS":    `[{url: "http://127.0.0.1:9/h", events: ["recording.*"]}]`,
		"SLUICE_RECORDING_GRACE":       "1m",
		"SLUICE_UNRELATED_THING":       "ignored",
		"SLUICE_RTMP_MAX_CONNS_PER_IP": "4",
	})})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.Listen != ":9000" || cfg.Rooms.EmptyTimeout != 30*time.Second {
		t.Errorf("file overlay lost: %+v %+v", cfg.HTTP, cfg.Rooms)
	}
	if cfg.Rooms.InterruptAfter != 3*time.Second {
		t.Errorf("keys the file does not set keep the default, got %v", cfg.Rooms.InterruptAfter)
	}
	if !reflect.DeepEqual(cfg.WebRTC.PublicIPs, []string{"203.0.113.7", "198.51.100.2"}) ||
		!reflect.DeepEqual(cfg.RTSP.Transports, []string{"tcp"}) ||
		cfg.Events.Retention != 24*time.Hour || cfg.Transcode.Enabled || cfg.Node.Name != "edge-1" ||
		cfg.Recording.Grace != time.Minute || cfg.RTMP.MaxConnsPerIP != 4 {
		t.Errorf("environment not applied: %+v", cfg)
	}
	if len(cfg.Webhooks.Endpoints) != 1 || cfg.Webhooks.Endpoints[0].Events[0] != "recording.*" {
		t.Errorf("endpoints from env: %+v", cfg.Webhooks.Endpoints)
	}
	if cfg.Node.DataDir != "/srv/sluice" || cfg.RecordingsDir() != "/srv/sluice/recordings" {
		t.Errorf("--data-dir: %s %s", cfg.Node.DataDir, cfg.RecordingsDir())
	}
	if cfg.Auth.OpenMode() {
		t.Error("auth keys from the file were dropped")
	}
}

func TestErrorsNameFileLineAndKey(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		env  map[string]string
		want []string
	}{
		{"unknown key", "http:\n  lisen: \":1\"\n", nil, []string{"sluice.yaml:2: http.lisen: unknown key", `did you mean "listen"`}},
		{"unknown section", "\n\nrecordings:\n  dir: x\n", nil, []string{":3: recordings: unknown key", `"recording"`}},
		{"bad duration", "rooms:\n  empty_timeout: five minutes\n", nil, []string{":2: rooms.empty_timeout:", "not a duration"}},
		{"bad int", "webrtc:\n  port: lots\n", nil, []string{":2: webrtc.port:", "whole number"}},
		{"invalid value", "webrtc:\n\n  port: 70000\n", nil, []string{":3: webrtc.port: 70000 is not a port number"}},
		{"invalid in list", "webrtc:\n  public_ips:\n    - 1.2.3.4\n    - nope\n", nil, []string{":4: webrtc.public_ips.1:", "not an IP"}},
		{"list expected", "rtsp:\n  transports: udp\n", nil, []string{":2: rtsp.transports: expected a list"}},
		{"short secret", "auth:\n  keys:\n    app: hunter2hunter2\n", nil, []string{":3: auth.keys.app: secret must be at least 32"}},
		{"events queue size", "events:\n  queue_size: 0\n", nil, []string{"events", "queue_size: must be 1 to 10000000"}},
		{"events ack wait", "events:\n  ack_wait: 0s\n", nil, []string{"events", "ack_wait: must be more than 0"}},
		{"events flush timeout", "events:\n  flush_timeout: 1h\n", nil, []string{"events", "flush_timeout: must be more than 0 and at most 10m"}},
		{"ingest without id", "ingests:\n  - {type: rtsp_pull, room: cam, url: \"rtsp://10.0.0.1/s\"}\n", nil, []string{":2: ingests.0.id:"}},
		{"bad yaml", "http: [\n", nil, []string{"sluice.yaml:"}},
		{"env bad duration", "", map[string]string{"SLUICE_ROOMS_EMPTY_TIMEOUT": "soon"}, []string{"environment SLUICE_ROOMS_EMPTY_TIMEOUT: rooms.empty_timeout:", "not a duration"}},
		{"env invalid value", "", map[string]string{"SLUICE_LOG_LEVEL": "loud"}, []string{"environment SLUICE_LOG_LEVEL: log.level:", "loud"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(Options{File: writeFile(t, tc.body), Env: envOf(tc.env)})
			if err == nil {
				t.Fatal("expected an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the error shows the secret: %q", err)
			}
		})
	}
}

func TestMissingFile(t *testing.T) {
	if _, err := Load(Options{File: "/nonexistent/sluice.yaml", Env: noEnv}); err == nil || !strings.Contains(err.Error(), "/nonexistent/sluice.yaml") {
		t.Fatalf("err = %v", err)
	}
}
