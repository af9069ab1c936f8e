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
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/sluice-media/sluice/cluster"
	"github.com/sluice-media/sluice/configs"
	"github.com/sluice-media/sluice/egress/composite"
	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/netguard"
	"github.com/sluice-media/sluice/webhooks"
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

// phase orders components: they start in phase order and stop in reverse, so that sessions
// stop before egress (which finalizes files), egress before the core closes rooms, and the core
// before the event log is flushed.
type phase int

const (
	phaseEvents   phase = iota // the event log and webhook delivery
	phaseQueue                 // the event queue: flushed into the log once every emitter stopped
	phaseCore                  // the hub: rooms, housekeeping
	phaseEgress                // recorder, broadcaster, transcoder
	phaseSessions              // protocol servers: WebRTC, RTMP, RTSP, SRT
	phaseCount
)

// component is one long-running part of the daemon.
type component struct {
	name string
	run  func(ctx context.Context) error
}

// daemon is the wired process: it owns every component and stops them in order.
type daemon struct {
	components [phaseCount][]component
	closers    []func() error // sockets and stores released after everything stopped, last first
	onShutdown []func()       // run when the HTTP server begins its graceful shutdown
	registry   *prometheus.Registry
	gate       *api.Gate
	outbound   *netguard.Policy // where pulls and broadcasts may connect

	cfg      *configs.Config
	log      *slog.Logger
	node     string
	emitter  sfu.Emitter     // the event queue in front of the log
	queue    *sfu.EventQueue // nil when newDaemon failed before it
	events   *webhooks.Log   // the durable event log: opened first, closed last
	hub      *sfu.Hub
	api      *api.Server
	ingests  *ingest.Store
	http     *http.Server
	listener net.Listener
	// childCPU is the CPU time of the daemon's child processes (the transcoders), set when
	// they are wired.
	childCPU func() time.Duration
	// comps make rooms' programs for broadcasts and recordings with a layout (nil when
	// transcoding is off).
	comps *composite.Manager
	// egressWorkers count the running recordings and broadcasts, for the cluster's load.
	egressWorkers []func() int
	// nodes is the cluster's node registry, router answers for the rooms of other nodes (both
	// nil on a single node).
	nodes  *cluster.Registry
	router *cluster.Router
}

// serve builds the daemon, runs it until ctx ends, then shuts it down.
func serve(ctx context.Context, cfg *configs.Config, logOut io.Writer) error {
	log := newLogger(cfg, logOut)
	d, err := newDaemon(ctx, cfg, log)
	if err != nil {
		return err
	}
	return d.run(ctx)
}

// newDaemon wires the daemon; ctx (the process's signals) cuts short the wait for the event
// log, which in a forming cluster waits for its peers.
func newDaemon(ctx context.Context, cfg *configs.Config, log *slog.Logger) (_ *daemon, err error) {
	if err := os.MkdirAll(cfg.Node.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	node := cfg.Node.Name
	if node == "" {
		node, _ = os.Hostname()
	}
	d := &daemon{cfg: cfg, log: log, node: node}
	defer func() {
		if err != nil {
			d.closeSockets()
		}
	}()
	if err := d.openEvents(ctx); err != nil {
		return nil, err
	}
	memBudget, memUsed := memoryBudget(cfg.Limits.MemoryMB, log)
	d.hub, err = sfu.NewHub(sfu.Options{
		Config:        cfg.Rooms,
		Limits:        cfg.Limits,
		MemoryBudget:  memBudget,
		Memory:        memUsed,
		StatsInterval: cfg.Events.StatsInterval,
		Emitter:       d.emitter,
		Logger:        log.With("component", "sfu"),
		CPU:           d.cpuTime,
	})
	if err != nil {
		return nil, err
	}
	verifier := auth.NewVerifier(cfg.Auth, nil)
	d.gate = api.NewGate(verifier, d.emitter)
	d.gate.AllowOrigins(cfg.HTTP.AllowedOrigins...)
	var metricsAllow []netip.Prefix
	for _, a := range cfg.HTTP.MetricsAllow {
		p, _ := netguard.ParsePrefix(a) // validated with the config
		metricsAllow = append(metricsAllow, p)
	}
	d.outbound = netguard.New(cfg.Outbound, listenPorts(cfg.HTTP.Listen, cfg.RTMP.Listen, cfg.RTMP.RTMPSListen, cfg.RTSP.Listen)...)
	d.registry = prometheus.NewRegistry()
	d.registry.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector(), d.hub)
	d.api = api.New(api.Options{Hub: d.hub, Gate: d.gate, Registry: d.registry, Logger: log, Version: version, Node: node, MetricsAllow: metricsAllow})
	d.add(phaseCore, "sfu", d.hub.Run)

	// Each edge package is wired in its own wire_*.go file.
	for _, wire := range []func() error{d.wireEvents, d.wireCluster, d.wireIngests, d.wireTranscode, d.wireBroadcast, d.wireWebRTC, d.wireRTMP, d.wireRTSP, d.wireSRT, d.wireHLS, d.wireWeb, d.wireRecorder} {
		if err := wire(); err != nil {
			return nil, err
		}
	}

	d.listener, err = net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return nil, fmt.Errorf("http listen %s: %w", cfg.HTTP.Listen, err)
	}
	limiter := api.NewConnLimiter(d.listener, httpConnCap(cfg.HTTP.MaxConns, log), cfg.HTTP.MaxConnsPerIP)
	d.registry.MustRegister(limiter.Collectors()...)
	d.listener = limiter
	handler := d.api.Handler()
	if d.router != nil {
		handler = d.router.Wrap(handler)
	}
	d.http = &http.Server{
		Handler:           api.BodyTimeout(cfg.HTTP.BodyTimeout, handler),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       cfg.HTTP.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	for _, fn := range d.onShutdown {
		d.http.RegisterOnShutdown(fn)
	}
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

// listenPorts returns the port numbers of listen addresses (those that parse).
func listenPorts(addrs ...string) []int {
	var out []int
	for _, a := range addrs {
		if _, p, err := net.SplitHostPort(a); err == nil {
			if n, err := strconv.Atoi(p); err == nil && n > 0 {
				out = append(out, n)
			}
		}
	}
	return out
}

// add registers a component to run in phase p.
func (d *daemon) add(p phase, name string, run func(ctx context.Context) error) {
	d.components[p] = append(d.components[p], component{name: name, run: run})
}

// onClose registers a release to run after every component stopped (last registered first).
func (d *daemon) onClose(fn func() error) { d.closers = append(d.closers, fn) }

// closeSockets releases what newDaemon bound, when it fails half-way or after run.
func (d *daemon) closeSockets() {
	if d.listener != nil {
		_ = d.listener.Close()
	}
	for i := len(d.closers) - 1; i >= 0; i-- {
		if err := d.closers[i](); err != nil {
			d.log.Warn("release", "err", err)
		}
	}
	d.closers = nil
}

// run serves until ctx ends, then stops the components in reverse phase order and releases
// the sockets.
func (d *daemon) run(ctx context.Context) error {
	defer d.closeSockets()
	var cancels [phaseCount]context.CancelFunc
	var groups [phaseCount]sync.WaitGroup
	failed := make(chan error, 16)
	for p := range phaseCount {
		pctx, cancel := context.WithCancel(context.Background())
		cancels[p] = cancel
		for _, c := range d.components[p] {
			groups[p].Add(1)
			go func() {
				defer groups[p].Done()
				if err := c.run(pctx); err != nil && pctx.Err() == nil {
					failed <- fmt.Errorf("%s: %w", c.name, err)
				}
			}()
		}
	}
	httpErr := make(chan error, 1)
	go func() { httpErr <- d.http.Serve(d.listener) }()

	if d.events != nil {
		// every component is running: end what the log still shows open from before this
		// process (rooms, participants, tracks, streams now; recordings and broadcasts after a
		// grace that leaves the recorder and broadcaster time to end their own)
		d.events.Reconcile(ctx)
	}
	d.emitter.Emit(&sfu.Event{Type: sfu.EventServerStarted, Version: version, Node: sfu.NodeRef{ID: d.node}})
	d.api.SetReady(true)
	d.log.Info("sluice is serving", "version", version, "http", d.listener.Addr().String(), "data_dir", d.cfg.Node.DataDir)

	var runErr error
	select {
	case <-ctx.Done():
		d.log.Info("shutting down")
	case err := <-httpErr:
		runErr = fmt.Errorf("http server: %w", err)
	case err := <-failed:
		runErr = err
	}
	d.api.SetReady(false)
	d.emitter.Emit(&sfu.Event{Type: sfu.EventServerStopping, Version: version, Node: sfu.NodeRef{ID: d.node}})

	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.http.Shutdown(shutCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		d.log.Warn("http shutdown", "err", err)
	}
	for p := phaseCount - 1; p >= 0; p-- {
		cancels[p]()
		groups[p].Wait()
	}
	d.log.Info("stopped")
	return runErr
}
