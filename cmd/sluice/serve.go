package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/sluice-media/sluice/configs"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/rtc"
)

func newServeCmd() *cobra.Command {
	var file, dataDir string
	var printConfig bool
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the daemon",
		Long: `Run the sluice daemon: the SFU core with WHIP/WHEP on the HTTP port, the event log, and the
ingest and egress workers.

The built-in configuration (print it with --print-config) is read first; --config FILE is read on
top of it, then SLUICE_* environment variables (SLUICE_HTTP_LISTEN=:9000), then --data-dir.`,
		Example: `  sluice serve
  sluice serve --config /etc/sluice/sluice.yaml --data-dir /var/lib/sluice
  SLUICE_WEBRTC_PUBLIC_IPS=203.0.113.7 sluice serve`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if printConfig {
				_, err := cmd.OutOrStdout().Write(configs.Default)
				return err
			}
			cfg, err := configs.Load(configs.Options{File: file, DataDir: dataDir})
			if err != nil {
				return err
			}
			return serve(cmd.Context(), cfg, cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "", "config file read on top of the built-in defaults")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "data directory (recordings, event store); overrides node.data_dir")
	cmd.Flags().BoolVar(&printConfig, "print-config", false, "print the built-in default configuration and exit")
	return cmd
}

func newLogger(cfg *configs.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.SlogLevel()}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// daemon is the wired process: it owns every component and stops them in order.
type daemon struct {
	cfg      *configs.Config
	log      *slog.Logger
	node     string
	emitter  sfu.Emitter
	hub      *sfu.Hub
	engine   *rtc.Engine
	rtc      *rtc.Server
	api      *api.Server
	http     *http.Server
	listener net.Listener
}

// serve builds the daemon, runs it until ctx ends, then shuts it down.
func serve(ctx context.Context, cfg *configs.Config, logOut io.Writer) error {
	log := newLogger(cfg, logOut)
	d, err := newDaemon(cfg, log)
	if err != nil {
		return err
	}
	return d.run(ctx)
}

func newDaemon(cfg *configs.Config, log *slog.Logger) (d *daemon, err error) {
	if err := os.MkdirAll(cfg.Node.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	node := cfg.Node.Name
	if node == "" {
		node, _ = os.Hostname()
	}
	d = &daemon{cfg: cfg, log: log, node: node}
	defer func() {
		if err != nil {
			d.closeSockets()
		}
	}()
	d.emitter = newLoggingEmitter(sfu.NewLocalEmitter(0, nil), log)
	d.hub, err = sfu.NewHub(sfu.Options{
		Config:        cfg.Rooms,
		StatsInterval: cfg.Events.StatsInterval,
		Emitter:       d.emitter,
		Logger:        log.With("component", "sfu"),
	})
	if err != nil {
		return nil, err
	}
	verifier := auth.NewVerifier(cfg.Auth, nil)
	gate := api.NewGate(verifier, d.emitter)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector(), d.hub)

	d.engine, err = rtc.NewEngine(cfg.WebRTC, log.With("component", "webrtc"))
	if err != nil {
		return nil, err
	}
	d.rtc = rtc.NewServer(d.engine, d.hub, gate, log.With("component", "webrtc"))
	d.api = api.New(api.Options{Hub: d.hub, Gate: gate, Registry: reg, Logger: log, Version: version, Node: node})
	d.rtc.Register(d.api)

	d.listener, err = net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return nil, fmt.Errorf("http listen %s: %w", cfg.HTTP.Listen, err)
	}
	d.http = &http.Server{Handler: d.api.Handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	if cfg.HTTP.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.HTTP.TLS.CertFile, cfg.HTTP.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("http tls: %w", err)
		}
		d.listener = tls.NewListener(d.listener, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	if verifier.OpenMode() {
		log.Warn("OPEN MODE: no auth keys configured; anyone who can reach this host may publish and play, and the API answers loopback clients only. Set auth.keys for production.")
	}
	return d, nil
}

// closeSockets releases what newDaemon bound when it fails half-way.
func (d *daemon) closeSockets() {
	if d.listener != nil {
		_ = d.listener.Close()
	}
	if d.engine != nil {
		_ = d.engine.Close()
	}
}

// run serves until ctx ends. Shutdown order: stop accepting, end sessions (publishers and
// viewers leave with server_shutdown), close rooms, flush events, release sockets.
func (d *daemon) run(ctx context.Context) error {
	sessCtx, stopSessions := context.WithCancel(context.Background())
	hubCtx, stopHub := context.WithCancel(context.Background())
	defer stopSessions()
	defer stopHub()

	var hubWG, sessWG sync.WaitGroup
	hubWG.Add(1)
	go func() { defer hubWG.Done(); _ = d.hub.Run(hubCtx) }()
	sessWG.Add(1)
	go func() { defer sessWG.Done(); _ = d.rtc.Run(sessCtx) }()

	httpErr := make(chan error, 1)
	go func() { httpErr <- d.http.Serve(d.listener) }()

	d.emitter.Emit(&sfu.Event{Type: sfu.EventServerStarted, Version: version, Node: d.node})
	d.api.SetReady(true)
	d.log.Info("sluice is serving", "version", version, "http", d.listener.Addr().String(),
		"webrtc_udp", d.engine.LocalAddr().String(), "data_dir", d.cfg.Node.DataDir)

	var runErr error
	select {
	case <-ctx.Done():
		d.log.Info("shutting down")
	case err := <-httpErr:
		runErr = fmt.Errorf("http server: %w", err)
	}
	d.api.SetReady(false)
	d.emitter.Emit(&sfu.Event{Type: sfu.EventServerStopping, Version: version, Node: d.node})

	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.http.Shutdown(shutCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		d.log.Warn("http shutdown", "err", err)
	}
	stopSessions()
	sessWG.Wait()
	stopHub()
	hubWG.Wait()
	if err := d.engine.Close(); err != nil {
		d.log.Warn("webrtc close", "err", err)
	}
	d.log.Info("stopped")
	return runErr
}

// loggingEmitter writes every event to the log at debug level after the inner emitter took it.
type loggingEmitter struct {
	inner sfu.Emitter
	log   *slog.Logger
}

func newLoggingEmitter(inner sfu.Emitter, log *slog.Logger) *loggingEmitter {
	return &loggingEmitter{inner: inner, log: log.With("component", "events")}
}

func (e *loggingEmitter) Emit(ev *sfu.Event) {
	e.inner.Emit(ev)
	e.log.Debug("event", "type", ev.Type, "seq", ev.Seq, "room", ev.RoomName(), "reason", ev.Reason)
}
