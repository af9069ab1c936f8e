package broadcast

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/sluice-media/sluice/egress"
	"github.com/sluice-media/sluice/egress/composite"
	"github.com/sluice-media/sluice/egress/rtmp"
	"github.com/sluice-media/sluice/sfu"
)

// Limits of a request.
const (
	maxDestinations = 8
	keepFinished    = 100 // ended broadcasts kept in the listing
	startTimeout    = 30 * time.Second
)

// DefaultBackoff paces reconnects: at once after 500 ms, then doubling to every 5 s, so that a
// platform back after a restart is found within seconds.
func DefaultBackoff() egress.Backoff {
	return egress.Backoff{Min: 500 * time.Millisecond, Max: 5 * time.Second, Stable: 30 * time.Second}
}

// Options build a Manager.
type Options struct {
	Config egress.BroadcastConfig
	Hub    *sfu.Hub
	Logger *slog.Logger
	// Backoff paces reconnects (DefaultBackoff when zero).
	Backoff egress.Backoff
	// RTMP tunes the connections (timeouts, TLS roots).
	RTMP rtmp.Options
	// Composites make a room's program for a broadcast with a layout (nil: layouts refused).
	Composites *composite.Manager
}

// Manager owns the broadcasts: it starts them, lists them, changes and stops them, and ends
// them all when it stops. Each broadcast runs its own goroutine, owned by the manager. Safe for
// concurrent use.
type Manager struct {
	cfg     egress.BroadcastConfig
	hub     *sfu.Hub
	log     *slog.Logger
	backoff egress.Backoff
	rtmp    rtmp.Options
	publish func(ctx context.Context, t rtmp.Target) (*rtmp.Conn, error)
	comps   *composite.Manager

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	all    map[string]*Broadcast
	order  []string // ids, oldest first
	closed bool
}

// New validates opts and returns a manager; it starts nothing.
func New(opts Options) (*Manager, error) {
	if opts.Hub == nil {
		return nil, errors.New("broadcast: a hub is required")
	}
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Backoff == (egress.Backoff{}) {
		opts.Backoff = DefaultBackoff()
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		cfg: opts.Config, hub: opts.Hub, log: opts.Logger, backoff: opts.Backoff, rtmp: opts.RTMP,
		ctx: ctx, cancel: cancel, all: map[string]*Broadcast{}, comps: opts.Composites,
	}
	m.publish = func(ctx context.Context, t rtmp.Target) (*rtmp.Conn, error) { return rtmp.Publish(ctx, t, m.rtmp) }
	return m, nil
}

func (m *Manager) now() time.Time { return m.hub.Now() }

// emit sends a broadcast event through the hub's emitter.
func (m *Manager) emit(_ *Broadcast, ev *sfu.Event) { m.hub.Emitter().Emit(ev) }

// Run waits for ctx, then ends every broadcast (broadcast.ended, reason server_shutdown) and
// waits for them.
func (m *Manager) Run(ctx context.Context) error {
	<-ctx.Done()
	m.Close()
	return nil
}

// Close ends every broadcast and waits for them. Idempotent.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
}

// StartRequest is the body of POST /v1/broadcasts.
type StartRequest struct {
	Room string   `json:"room"`
	URLs []string `json:"urls"`
	// URL is a single destination, for clients that send one.
	URL string `json:"url,omitempty"`
	// Participant is the identity of the source; empty follows the room's main publisher.
	// With the single layout, it is the participant shown.
	Participant string `json:"participant,omitempty"`
	// Options, with a layout, broadcast the whole room composed (egress/composite).
	composite.Options
}

// Start begins a broadcast. It returns once the source is bound (or found missing, which
// starts the grace period): a source that cannot be carried fails the broadcast here, with
// its broadcast.failed event and the error. Destinations connect in the background.
func (m *Manager) Start(req StartRequest) (*sfu.BroadcastInfo, error) {
	if req.URL != "" {
		req.URLs = append([]string{req.URL}, req.URLs...)
	}
	if err := sfu.ValidateName(req.Room); err != nil {
		return nil, fmt.Errorf("%w: room: %w", ErrInvalid, err)
	}
	if req.Participant != "" {
		if err := sfu.ValidateName(req.Participant); err != nil {
			return nil, fmt.Errorf("%w: participant: %w", ErrInvalid, err)
		}
	}
	targets, err := parseURLs(req.URLs, nil)
	if err != nil {
		return nil, err
	}
	var comp *composite.Composite
	var release func()
	if req.Layout != "" {
		if m.comps == nil {
			return nil, fmt.Errorf("%w: layouts need the compositor (ffmpeg)", ErrInvalid)
		}
		spec, err := req.Spec(req.Room, req.Participant)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		if comp, release, err = m.comps.Acquire(spec); err != nil {
			if errors.Is(err, composite.ErrConflict) {
				return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
			}
			return nil, err
		}
		req.Participant = composite.Identity
	}
	b := &Broadcast{
		m:        m,
		id:       sfu.NewID("BC_"),
		room:     req.Room,
		identity: req.Participant,
		epoch:    m.now(),
		status:   StatusStarting,
		done:     make(chan struct{}),
		reports:  make(chan report, 16),
		cmds:     make(chan func()),
		first:    make(chan error, 1),
		comp:     comp,
		release:  release,
	}
	b.log = m.log.With("broadcast", b.id, "room", b.room)
	b.ctx, b.cancel = context.WithCancel(m.ctx)
	for i, t := range targets {
		b.dests = append(b.dests, newDestination(b, req.URLs[i], t))
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		b.cancel()
		if release != nil {
			release()
		}
		return nil, ErrClosed
	}
	m.all[b.id] = b
	m.order = append(m.order, b.id)
	m.trimLocked()
	m.wg.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.wg.Done()
		b.run()
	}()
	b.log.Info("broadcast starting", "participant", req.Participant, "destinations", len(b.dests))
	select {
	case err := <-b.first:
		if err != nil {
			<-b.done // failed at once: its state and event are final
			return b.Info(), err
		}
	case <-time.After(startTimeout):
	}
	return b.Info(), nil
}

// parseURLs checks destination URLs: rtmp:// or rtmps://, no duplicates (with have).
func parseURLs(urls []string, have []*destination) ([]rtmp.Target, error) {
	if len(urls) == 0 {
		return nil, fmt.Errorf("%w: at least one destination url is required", ErrInvalid)
	}
	if len(urls)+len(have) > maxDestinations {
		return nil, fmt.Errorf("%w: at most %d destinations", ErrInvalid, maxDestinations)
	}
	seen := map[string]bool{}
	for _, d := range have {
		seen[d.raw] = true
	}
	out := make([]rtmp.Target, 0, len(urls))
	for i, u := range urls {
		t, err := rtmp.ParseURL(u)
		if err != nil {
			return nil, fmt.Errorf("%w: url %d: %w", ErrInvalid, i+1, err)
		}
		if seen[u] {
			return nil, fmt.Errorf("%w: url %d (%s) is already a destination", ErrInvalid, i+1, t.Redacted())
		}
		seen[u] = true
		out = append(out, t)
	}
	return out, nil
}

// trimLocked forgets the oldest ended broadcasts beyond keepFinished.
func (m *Manager) trimLocked() {
	ended := 0
	for _, id := range m.order {
		if isDone(m.all[id]) {
			ended++
		}
	}
	for i := 0; ended > keepFinished && i < len(m.order); {
		id := m.order[i]
		if isDone(m.all[id]) {
			delete(m.all, id)
			m.order = append(m.order[:i], m.order[i+1:]...)
			ended--
			continue
		}
		i++
	}
}

func isDone(b *Broadcast) bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

func (m *Manager) get(id string) (*Broadcast, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.all[id]
	if b == nil {
		return nil, ErrNotFound
	}
	return b, nil
}

// Get returns one broadcast.
func (m *Manager) Get(id string) (*sfu.BroadcastInfo, error) {
	b, err := m.get(id)
	if err != nil {
		return nil, err
	}
	return b.Info(), nil
}

// List returns every broadcast, oldest first (running ones and the last ended ones).
func (m *Manager) List() []*sfu.BroadcastInfo {
	m.mu.Lock()
	bs := make([]*Broadcast, 0, len(m.order))
	for _, id := range m.order {
		bs = append(bs, m.all[id])
	}
	m.mu.Unlock()
	out := make([]*sfu.BroadcastInfo, 0, len(bs))
	for _, b := range bs {
		out = append(out, b.Info())
	}
	return out
}

// Stop ends a broadcast (broadcast.ended, reason stopped) and waits until it has released
// everything. Stopping an ended broadcast returns it unchanged.
func (m *Manager) Stop(id string) (*sfu.BroadcastInfo, error) {
	b, err := m.get(id)
	if err != nil {
		return nil, err
	}
	b.stop(sfu.ReasonStopped)
	<-b.done
	return b.Info(), nil
}

// UpdateRequest is the body of PATCH /v1/broadcasts/{id}.
type UpdateRequest struct {
	AddURLs []string `json:"add_urls,omitempty"`
	// RemoveURLs names destinations by their full URL or their id.
	RemoveURLs []string `json:"remove_urls,omitempty"`
}

// Update adds and removes destinations of a running broadcast; the others are not touched.
func (m *Manager) Update(id string, req UpdateRequest) (*sfu.BroadcastInfo, error) {
	b, err := m.get(id)
	if err != nil {
		return nil, err
	}
	if len(req.AddURLs) == 0 && len(req.RemoveURLs) == 0 {
		return nil, fmt.Errorf("%w: nothing to add or remove", ErrInvalid)
	}
	err = b.do(func() error {
		b.mu.Lock()
		have := append([]*destination(nil), b.dests...)
		b.mu.Unlock()
		var remove []*destination
		for _, r := range req.RemoveURLs {
			found := false
			for _, d := range have {
				if d.raw == r || d.id == r {
					remove = append(remove, d)
					found = true
					break
				}
			}
			if !found {
				return fmt.Errorf("%w: %s is not a destination of this broadcast", ErrInvalid, redactArg(r))
			}
		}
		kept := have[:0:0]
		for _, d := range have {
			if !contains(remove, d) {
				kept = append(kept, d)
			}
		}
		var targets []rtmp.Target
		if len(req.AddURLs) > 0 {
			var err error
			if targets, err = parseURLs(req.AddURLs, kept); err != nil {
				return err
			}
		}
		if len(kept)+len(targets) == 0 {
			return fmt.Errorf("%w: %w", ErrInvalid, errLastDestination)
		}
		for _, d := range remove {
			b.removeDestination(d)
		}
		for i, t := range targets {
			d := newDestination(b, req.AddURLs[i], t)
			b.addDestination(d)
			d.log.Info("broadcast destination added")
		}
		m.emit(b, &sfu.Event{Type: sfu.EventBroadcastUpdated, Broadcast: b.Info()}) // the destination list changed
		return nil
	})
	if err != nil {
		return nil, err
	}
	return b.Info(), nil
}

func contains(ds []*destination, d *destination) bool {
	for _, o := range ds {
		if o == d {
			return true
		}
	}
	return false
}

// redactArg shows a URL the user named without its key (an id shows as is).
func redactArg(s string) string {
	if t, err := rtmp.ParseURL(s); err == nil {
		return t.Redacted()
	}
	if len(s) > 40 || len(s) == 0 {
		return "the given value"
	}
	for _, c := range s {
		if c == '/' || c == ':' {
			return "the given value"
		}
	}
	return s
}
