package webhooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-media/sluice/sfu"
)

// Names of the JetStream objects the log owns.
const (
	streamEvents     = "SLUICE_EVENTS"
	streamDeliveries = "SLUICE_DELIVERIES"
	bucketState      = "sluice_state"
	headerNode       = "Sluice-Node"
)

// LogOptions build a Log.
type LogOptions struct {
	Config EventsConfig
	// DataDir holds the embedded server's store (DataDir/events).
	DataDir string
	// Node names this daemon; open objects are tracked per node.
	Node   string
	Logger *slog.Logger
	// Clock returns the current time; time.Now when nil.
	Clock func() time.Time
	// EmitTimeout bounds how long one Emit retries an unreachable log (default 5 s).
	EmitTimeout time.Duration
	// SnapshotInterval is the period of the open-objects snapshot (default 30 s).
	SnapshotInterval time.Duration
	// EgressGrace is how long Reconcile leaves recordings and broadcasts to the components that
	// recover them before it ends those still open (default 15 s).
	EgressGrace time.Duration
	// Routes, when set, make the embedded server one member of a NATS cluster: it listens for
	// routes and connects to its peers' (ignored with an external server).
	Routes *Routes
	// Replicas is the replication factor of the log's streams and buckets when they are
	// created (default 1).
	Replicas int
}

// Routes are the cluster settings of the embedded server.
type Routes struct {
	// Name is the NATS cluster name, the same on every node.
	Name string
	// Host and Port are where the server listens for its peers' routes.
	Host string
	Port int
	// Peers are the route URLs of the other nodes (nats-route://host:port).
	Peers []*url.URL
	// User and Password authenticate routes in both directions; never logged.
	User, Password string
}

// Log is the durable event log: a JetStream stream, embedded in the process (file store under
// DataDir/events, no TCP listener) or on an external NATS server. It implements sfu.Emitter:
// Emit returns once the event is stored (written to the store file) and sets its Seq.
//
// Lifecycle: OpenLog connects (and starts the embedded server) and recovers the index of open
// objects; Run keeps the snapshot of that index and ends with a final one; Close releases the
// connection and the server, after every emitter has stopped. Emit, Read and Follow are safe for
// concurrent use between OpenLog and Close.
type Log struct {
	opts  LogOptions
	log   *slog.Logger
	clock func() time.Time

	srvMu  sync.Mutex     // guards srv against a concurrent repair
	srv    *server.Server // nil with an external server
	ref    serverRef      // the in-process connection's way to the current srv
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	state  jetstream.KeyValue

	index *index
	// startSeq is the last seq of the log when this process opened it: Reconcile ends only
	// objects begun at or before it.
	startSeq uint64

	closed   atomic.Bool
	down     atomic.Bool     // the last Emit gave up: the next ones try once, briefly, until one succeeds
	ctx      context.Context // cancelled by Close; owns background work (deferred reconcile)
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	emitted  prometheus.Counter
	failures prometheus.Counter
	latency  prometheus.Histogram
	// recoveries counts restarts of the embedded store after it failed.
	recoveries    prometheus.Counter
	repairing     atomic.Bool  // a repair is pending or running
	repairBackoff atomic.Int64 // wait before the next repair (ns); doubles while it fails
	unconfirmed   atomic.Bool  // a repair ran and no event was stored since
	// clientToken guards the loopback client port a clustered embedded server must open
	// ("" without routes: no client port at all).
	clientToken string
}

// OpenLog starts the embedded JetStream server (or connects to cfg.NATSURL), makes sure the
// stream and state bucket exist with the configured retention, and recovers the open objects.
func OpenLog(ctx context.Context, opts LogOptions) (l *Log, err error) {
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.EmitTimeout <= 0 {
		opts.EmitTimeout = 5 * time.Second
	}
	if opts.SnapshotInterval <= 0 {
		opts.SnapshotInterval = 30 * time.Second
	}
	if opts.EgressGrace <= 0 {
		opts.EgressGrace = 15 * time.Second
	}
	l = &Log{opts: opts, log: opts.Logger, clock: opts.Clock, index: newIndex(opts.Node)}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.emitted = prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_events_emitted_total", Help: "Events stored in the event log."})
	l.failures = prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_events_emit_failures_total", Help: "Events that could not be stored in the event log (lost)."})
	l.recoveries = prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_events_store_recoveries_total", Help: "Restarts of the embedded event store after it failed to store (full disk, no file descriptors)."})
	l.latency = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sluice_events_emit_seconds", Help: "Time to store one event.",
		Buckets: []float64{0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3}})
	defer func(opened *Log) { // l is nil once an error is returned
		if err != nil {
			_ = opened.Close()
		}
	}(l)
	if opts.Config.NATSURL == "" {
		if err := l.startEmbedded(); err != nil {
			return nil, err
		}
	} else {
		l.nc, err = nats.Connect(opts.Config.NATSURL, nats.Name("sluice "+opts.Node), nats.MaxReconnects(-1),
			nats.ReconnectWait(time.Second), nats.Timeout(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("events: connecting to %s: %w", redactURL(opts.Config.NATSURL), err)
		}
	}
	l.js, err = jetstream.New(l.nc)
	if err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	if err := l.ensureStreams(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Log) startEmbedded() error {
	if l.opts.Routes != nil {
		l.clientToken = sfu.NewID("")
	}
	srv, err := l.newEmbedded()
	if err != nil {
		return err
	}
	l.srv = srv
	l.ref.p.Store(srv)
	l.nc, err = nats.Connect("", nats.InProcessServer(&l.ref), nats.Name("sluice"), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
		nats.Token(l.clientToken))
	if err != nil {
		return fmt.Errorf("events: in-process connection: %w", err)
	}
	return nil
}

// newEmbedded starts an embedded server on DataDir/events.
func (l *Log) newEmbedded() (*server.Server, error) {
	dir := filepath.Join(l.opts.DataDir, "events")
	opts := &server.Options{
		ServerName:         "sluice",
		DontListen:         true, // in-process connections only: no TCP port at all
		JetStream:          true,
		StoreDir:           dir,
		JetStreamMaxMemory: 8 << 20, // no memory streams are used; keep the reservation small
		MaxPayload:         8 << 20, // room for the open-objects snapshot
		NoSigs:             true,
		NoLog:              true,
	}
	if r := l.opts.Routes; r != nil {
		// JetStream names each member of its cluster: the node name must be unique
		opts.ServerName = l.opts.Node
		// the server starts its routes only once a client listener is up: a random loopback
		// port, closed to all but this process by a random token
		opts.DontListen, opts.Host, opts.Port, opts.Authorization = false, "127.0.0.1", server.RANDOM_PORT, l.clientToken
		opts.Cluster = server.ClusterOpts{Name: r.Name, Host: r.Host, Port: r.Port, Username: r.User, Password: r.Password}
		opts.Routes = r.Peers
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("events: embedded server: %w", err)
	}
	srv.SetLoggerV2(natsLogger{log: l.log.With("component", "nats"), storeFailed: l.needRepair}, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("events: embedded server in %s did not start", dir)
	}
	return srv, nil
}

// ensureStreams makes sure the streams and the state bucket exist, then recovers the open
// objects. In a cluster that is still forming (no JetStream leader yet) it retries both until
// ctx ends.
func (l *Log) ensureStreams(ctx context.Context) error {
	if l.opts.Routes == nil {
		if err := l.ensureStreamsOnce(ctx); err != nil {
			return err
		}
		return l.recover(ctx)
	}
	for {
		// a request made before the cluster (or a new bucket) has a leader may get no answer at
		// all: bound each try
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := l.ensureStreamsOnce(actx)
		if err == nil {
			l.index = newIndex(l.opts.Node)
			err = l.recover(actx)
		}
		cancel()
		if err == nil {
			return nil
		}
		l.log.Info("events: waiting for the cluster's JetStream", "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (l *Log) ensureStreamsOnce(ctx context.Context) error {
	retention := l.opts.Config.Retention
	replicas := max(l.opts.Replicas, 1)
	for _, cfg := range []jetstream.StreamConfig{
		{Name: streamEvents, Subjects: []string{subjectPrefix + ">"}, Storage: jetstream.FileStorage, MaxAge: retention,
			Duplicates: 2 * time.Minute, Description: "sluice event log", Replicas: replicas},
		{Name: streamDeliveries, Subjects: []string{deliverySubjectPrefix + ">"}, Storage: jetstream.FileStorage, MaxAge: retention,
			Description: "sluice webhook delivery records", Replicas: replicas},
	} {
		if err := ensureStream(ctx, l.js, cfg); err != nil {
			return err
		}
	}
	s, err := l.js.Stream(ctx, streamEvents)
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	l.stream = s
	l.state, err = l.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucketState, Description: "sluice endpoints, cursors and open objects", Storage: jetstream.FileStorage, Replicas: replicas})
	if err != nil {
		return fmt.Errorf("events: state bucket: %w", err)
	}
	return nil
}

// ensureStream creates the stream, or updates the retention of an existing one (keeping the
// replicas and placement an operator may have chosen on an external cluster).
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	s, err := js.Stream(ctx, cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			return fmt.Errorf("events: creating stream %s: %w", cfg.Name, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("events: stream %s: %w", cfg.Name, err)
	}
	cur := s.CachedInfo().Config
	if cur.MaxAge == cfg.MaxAge {
		return nil
	}
	cur.MaxAge = cfg.MaxAge
	if _, err := js.UpdateStream(ctx, cur); err != nil {
		return fmt.Errorf("events: updating stream %s: %w", cfg.Name, err)
	}
	return nil
}

// Collectors returns the log's metrics for a Prometheus registry.
func (l *Log) Collectors() []prometheus.Collector {
	return []prometheus.Collector{l.emitted, l.failures, l.latency, l.recoveries}
}

// Emit stores ev in the log and sets its ID, Time and Seq. It retries an unreachable log for up
// to EmitTimeout with the same message id (the log drops duplicates), then logs the loss and
// counts it in sluice_events_emit_failures_total; it never panics and never blocks longer.
func (l *Log) Emit(ev *sfu.Event) {
	msg, err := l.message(ev)
	if err != nil { // cannot happen with the event types; count it like a loss
		l.lost(ev, err)
		return
	}
	start := time.Now()
	deadline := start.Add(l.opts.EmitTimeout)
	if l.down.Load() && !l.nc.IsConnected() {
		// the log is known to be unreachable: do not stall every emitter for the whole timeout
		deadline = start.Add(100 * time.Millisecond)
	}
	backoff := 20 * time.Millisecond
	for {
		if l.closed.Load() {
			l.lost(ev, errors.New("event log closed"))
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), max(min(2*time.Second, time.Until(deadline)), 10*time.Millisecond))
		err := l.publish(ctx, msg, ev, start)
		cancel()
		if err == nil {
			return
		}
		if time.Now().Add(backoff).After(deadline) {
			l.lost(ev, err)
			return
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, time.Second)
	}
}

// Write stores ev once, implementing sfu.Store for the daemon's event queue: it fills ID and
// Time when empty, publishes with the event ID as message id (so a retried event is stored
// once) and sets ev.Seq. It does not retry and logs nothing; the queue does both.
func (l *Log) Write(ctx context.Context, ev *sfu.Event) error {
	if l.closed.Load() {
		return errors.New("event log closed")
	}
	msg, err := l.message(ev)
	if err != nil {
		return err
	}
	return l.publish(ctx, msg, ev, time.Now())
}

// message stamps ev and builds its log message, with seq 0 in the body (readers fill it in).
func (l *Log) message(ev *sfu.Event) (*nats.Msg, error) {
	sfu.Stamp(ev, l.clock())
	ev.Seq = 0
	body, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("events: encoding %s: %w", ev.Type, err)
	}
	msg := &nats.Msg{Subject: eventSubject(ev.RoomName(), ev.Type), Data: body, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
	msg.Header.Set(headerNode, l.opts.Node)
	return msg, nil
}

// publish makes one attempt to store msg; on success it sets ev.Seq and updates the index and
// the metrics.
func (l *Log) publish(ctx context.Context, msg *nats.Msg, ev *sfu.Event, start time.Time) error {
	ack, err := l.js.PublishMsg(ctx, msg)
	if err != nil {
		return fmt.Errorf("events: storing %s: %w", ev.Type, err)
	}
	l.down.Store(false)
	ev.Seq = ack.Sequence
	l.latency.Observe(time.Since(start).Seconds())
	l.emitted.Inc()
	l.index.apply(ev, ack.Sequence)
	l.stored()
	return nil
}

func (l *Log) lost(ev *sfu.Event, err error) {
	l.down.Store(true)
	l.failures.Inc()
	l.log.Error("EVENT LOST: the event log did not store it", "type", ev.Type, "id", ev.ID, "room", ev.RoomName(), "err", err)
	l.needRepair("an event was lost: " + err.Error())
}

// Run keeps the snapshot of open objects fresh until ctx ends, then writes a final one. It is
// the log's component in the daemon's first phase, so it ends after every emitter.
func (l *Log) Run(ctx context.Context) error {
	tick := time.NewTicker(l.opts.SnapshotInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := l.saveSnapshot(sctx); err != nil {
				l.log.Warn("events: final snapshot", "err", err)
			}
			return nil
		case <-tick.C:
			if err := l.saveSnapshot(ctx); err != nil && ctx.Err() == nil {
				l.log.Warn("events: snapshot", "err", err)
			}
		}
	}
}

// Close stops background work, flushes and closes the connection, and shuts the embedded
// server down. Idempotent; safe after a partial OpenLog.
func (l *Log) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	l.cancel()
	l.wg.Wait()
	if l.nc != nil {
		_ = l.nc.FlushTimeout(2 * time.Second)
		l.nc.Close()
	}
	l.srvMu.Lock()
	defer l.srvMu.Unlock()
	if l.srv != nil {
		l.srv.Shutdown()
		l.srv.WaitForShutdown()
	}
	return nil
}

// External reports whether the log is on an external NATS server (possibly shared by several
// nodes) rather than embedded.
func (l *Log) External() bool { return l.opts.Config.NATSURL != "" }

// JetStream returns the JetStream context, for the webhook deliverer and the cluster.
func (l *Log) JetStream() jetstream.JetStream { return l.js }

// Replicas is the replication factor of the log's streams and buckets.
func (l *Log) Replicas() int { return max(l.opts.Replicas, 1) }

// State returns the key-value bucket of endpoints, cursors and snapshots.
func (l *Log) State() jetstream.KeyValue { return l.state }

// LastSeq returns the seq of the newest event in the log (0 when empty).
func (l *Log) LastSeq(ctx context.Context) (uint64, error) {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("events: %w", err)
	}
	return info.State.LastSeq, nil
}

// Record is one event read from the log.
type Record struct {
	Seq  uint64
	ID   string
	Type string
	Room string
	Node string
	Time time.Time
	// Body is the event's JSON (the wire schema) with its seq filled in.
	Body []byte
}

// Event decodes the record's body.
func (r Record) Event() (*sfu.Event, error) {
	var ev sfu.Event
	if err := json.Unmarshal(r.Body, &ev); err != nil {
		return nil, err
	}
	return &ev, nil
}

func recordOf(m jetstream.Msg) (Record, error) {
	meta, err := m.Metadata()
	if err != nil {
		return Record{}, err
	}
	room, typ, _ := parseSubject(m.Subject())
	return Record{
		Seq:  meta.Sequence.Stream,
		ID:   m.Headers().Get(jetstream.MsgIDHeader),
		Type: typ,
		Room: room,
		Node: m.Headers().Get(headerNode),
		Time: meta.Timestamp,
		Body: withSeq(m.Data(), meta.Sequence.Stream),
	}, nil
}

// withSeq returns body with its "seq":0 replaced by seq. The envelope's field order puts
// "seq" after "id" and "type", whose string values cannot contain an unescaped quote, so the
// first `"seq":0` is the envelope's.
func withSeq(body []byte, seq uint64) []byte {
	const zero = `"seq":0`
	i := bytes.Index(body, []byte(zero))
	if i < 0 {
		return body
	}
	out := make([]byte, 0, len(body)+20)
	out = append(out, body[:i+len(zero)-1]...)
	out = strconv.AppendUint(out, seq, 10)
	return append(out, body[i+len(zero):]...)
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// natsLogger bridges the embedded server's logger into slog, and reports store failures.
type natsLogger struct {
	log         *slog.Logger
	storeFailed func(cause string)
}

func (n natsLogger) Noticef(format string, v ...any) { n.log.Debug(fmt.Sprintf(format, v...)) }
func (n natsLogger) Warnf(format string, v ...any)   { n.errorf(slog.LevelWarn, format, v...) }
func (n natsLogger) Fatalf(format string, v ...any)  { n.errorf(slog.LevelError, format, v...) }
func (n natsLogger) Errorf(format string, v ...any)  { n.errorf(slog.LevelError, format, v...) }

func (n natsLogger) errorf(level slog.Level, format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if strings.Contains(msg, "connect to route") {
		level = slog.LevelInfo // a peer not up yet, or gone: the server retries
	}
	n.log.Log(context.Background(), level, msg)
	if isStoreFailure(msg) {
		n.storeFailed(msg)
	}
}
func (n natsLogger) Debugf(format string, v ...any) { n.log.Debug(fmt.Sprintf(format, v...)) }
func (n natsLogger) Tracef(string, ...any)          {}
