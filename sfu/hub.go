package sfu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Config is the `rooms:` section of the daemon config.
type Config struct {
	// EmptyTimeout closes a room this long after its last participant left (default 5m).
	EmptyTimeout time.Duration `yaml:"empty_timeout"`
	// InterruptAfter is how long a published, unmuted track may go without media before
	// track.interrupted (default 3s).
	InterruptAfter time.Duration `yaml:"interrupt_after"`
	// KeyframeRequestInterval throttles keyframe requests forwarded to a publisher (default
	// 500ms): a new viewer waits at most this long for its keyframe, and a publisher is asked for
	// at most 2 keyframes a second however many viewers join. Under 300ms, browsers drop some
	// (libwebrtc ignores a request within 300 ms of the previous one); LiveKit's server waits
	// 500ms to 1s.
	KeyframeRequestInterval time.Duration `yaml:"keyframe_request_interval"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{EmptyTimeout: 5 * time.Minute, InterruptAfter: 3 * time.Second, KeyframeRequestInterval: 500 * time.Millisecond}
}

// Validate reports the first invalid value.
func (c Config) Validate() error {
	switch {
	case c.EmptyTimeout < 0:
		return fmt.Errorf("empty_timeout: must not be negative")
	case c.InterruptAfter <= 0:
		return fmt.Errorf("interrupt_after: must be positive")
	case c.KeyframeRequestInterval < 0:
		return fmt.Errorf("keyframe_request_interval: must not be negative")
	}
	return nil
}

// Options build a Hub.
type Options struct {
	Config Config
	// StatsInterval is the period of stream.stats events (0 disables them).
	StatsInterval time.Duration
	Emitter       Emitter
	Logger        *slog.Logger
	// Clock returns the current time; time.Now when nil.
	Clock func() time.Time
	// Tick is the period of the hub's housekeeping (default 250ms).
	Tick time.Duration
	// Limits protect viewers when the daemon runs out of CPU.
	Limits Limits
	// CPU returns the process's CPU time (ProcessCPU when nil; injectable for tests).
	CPU func() time.Duration
	// MemoryBudget is the memory budget in bytes, resolved from Limits.MemoryMB by the caller
	// (which knows the cgroup); 0 turns memory admission off.
	MemoryBudget uint64
	// Memory returns the bytes the daemon uses, sampled once a second while there is a budget
	// (GoMemory when nil; the daemon adds its cgroup's working set, which counts its children).
	Memory func() uint64
}

// Hub is the SFU core: the set of rooms, and the housekeeping goroutine that closes empty rooms,
// watches tracks for interruptions, measures rates and emits stream.stats. It opens no sockets.
//
// NewHub starts nothing; Run does the housekeeping until its context ends, then closes every
// room with reason server_shutdown. All methods are safe for concurrent use.
type Hub struct {
	cfg    Config
	opts   Options
	emit   Emitter
	log    *slog.Logger
	clock  func() time.Time
	closed atomic.Bool

	mu      sync.Mutex
	rooms   map[string]*Room
	changed signal

	retired    counters
	load       loadState
	mem        memoryState
	transcoder atomic.Pointer[transcoderBox]
}

// counters are totals of tracks and subscriptions that have ended.
type counters struct {
	packetsIn, bytesIn, packetsOut, bytesOut, dropped, keyframeRequests atomic.Uint64
}

// NewHub validates opts and returns a hub; it starts nothing.
func NewHub(opts Options) (*Hub, error) {
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	if opts.Emitter == nil {
		opts.Emitter = EmitterFunc(func(*Event) {})
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Tick <= 0 {
		opts.Tick = 250 * time.Millisecond
	}
	if opts.Limits == (Limits{}) {
		opts.Limits = DefaultLimits()
	}
	if err := opts.Limits.Validate(); err != nil {
		return nil, err
	}
	if opts.CPU == nil {
		opts.CPU = ProcessCPU
	}
	if opts.Memory == nil {
		opts.Memory = GoMemory
	}
	high := opts.Limits.MemoryHigh
	if high == 0 {
		high = defaultMemoryHigh
	}
	h := &Hub{
		cfg:   opts.Config,
		opts:  opts,
		emit:  opts.Emitter,
		log:   opts.Logger,
		clock: opts.Clock,
		rooms: map[string]*Room{},
	}
	h.mem.budget, h.mem.mark = opts.MemoryBudget, uint64(float64(opts.MemoryBudget)*high)
	h.measureMemory()
	return h, nil
}

// Emitter returns the hub's event emitter, for edge packages that emit their own events.
func (h *Hub) Emitter() Emitter { return h.emit }

// Settle waits, for a bounded time, until the events of room emitted so far are stored (see
// Settler); it returns at once with an emitter that stores before Emit returns. The hub's own
// operations that a client is told about settle before returning; edge packages call it after
// emitting an event whose change they acknowledge. Never call it with a lock held.
func (h *Hub) Settle(room string) { Settle(h.emit, room) }

// Now returns the hub clock's time.
func (h *Hub) Now() time.Time { return h.clock() }

// Run does the housekeeping until ctx ends, then closes every room (server_shutdown). The
// stream.stats events come from a goroutine of their own, so that gathering protocol figures
// never delays the housekeeping.
func (h *Hub) Run(ctx context.Context) error {
	var stats sync.WaitGroup
	if h.opts.StatsInterval > 0 {
		stats.Add(1)
		go func() {
			defer stats.Done()
			h.runStats(ctx)
		}()
	}
	stats.Add(1)
	go func() {
		defer stats.Done()
		h.runActivity(ctx)
	}()
	tick := time.NewTicker(h.opts.Tick)
	defer tick.Stop()
	var lastRates time.Time
	for {
		select {
		case <-ctx.Done():
			stats.Wait()
			h.Close()
			return nil
		case <-tick.C:
		}
		now := h.clock()
		if now.Sub(lastRates) >= time.Second {
			h.updateRates(now)
			h.measureLoad(now)
			h.measureMemory()
			h.shed()
			lastRates = now
		}
		h.watchTracks(now)
		h.expireRooms(now)
	}
}

// runStats emits stream.stats every StatsInterval until ctx ends.
func (h *Hub) runStats(ctx context.Context) {
	tick := time.NewTicker(h.opts.StatsInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			h.emitStats()
		}
	}
}

// runActivity evaluates the rooms' active speakers every speakerTick and the participants'
// connection quality every QualityInterval, until ctx ends.
func (h *Hub) runActivity(ctx context.Context) {
	tick := time.NewTicker(speakerTick)
	defer tick.Stop()
	var lastQuality time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := h.clock()
		for _, r := range h.Rooms() {
			r.evalSpeakers(now)
		}
		if now.Sub(lastQuality) >= QualityInterval-speakerTick/2 {
			h.evalQuality(now)
			lastQuality = now
		}
	}
}

// Close finishes every room with reason server_shutdown and refuses new joins. Idempotent.
func (h *Hub) Close() {
	h.closed.Store(true)
	for _, r := range h.Rooms() {
		r.finish(ReasonServerShutdown)
	}
}

// Changed returns the hub-wide change signal: a channel closed at the next change of the set of
// rooms or of any room's participants or tracks. Watchers take it, re-read the state they need,
// wait on it and take it again; one channel serves however many rooms they watch.
func (h *Hub) Changed() <-chan struct{} { return h.changed.wait() }

// notify fires the change signal.
func (h *Hub) notify() { h.changed.fire() }

// signal is a change signal: wait returns a channel that the next fire closes. The zero value
// is ready; safe for concurrent use.
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

func (s *signal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *signal) fire() {
	s.mu.Lock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
	s.mu.Unlock()
}

// Room returns the open room with that name, or nil.
func (h *Hub) Room(name string) *Room {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.rooms[name]
}

// Rooms returns the open rooms sorted by name.
func (h *Hub) Rooms() []*Room {
	h.mu.Lock()
	out := make([]*Room, 0, len(h.rooms))
	for _, r := range h.rooms {
		out = append(out, r)
	}
	h.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// RoomOptions are set when a room is created by the API.
type RoomOptions struct {
	EmptyTimeout time.Duration // 0: the config's
	Metadata     string
}

// CreateRoom opens a room (room.started) or returns the open one with that name, and whether it
// was created.
func (h *Hub) CreateRoom(name string, opts RoomOptions) (*Room, bool, error) {
	if err := ValidateName(name); err != nil {
		return nil, false, fmt.Errorf("room %w", err)
	}
	for {
		r, created, err := h.getOrCreate(name, opts)
		if err != nil {
			return nil, false, err
		}
		r.opMu.Lock()
		if r.isClosed() {
			r.opMu.Unlock()
			continue // lost a race with the room's end: make a new one
		}
		if !r.started {
			r.started = true
			h.emitRoom(EventRoomStarted, r, "")
		}
		r.opMu.Unlock()
		h.Settle(name)
		return r, created, nil
	}
}

func (h *Hub) getOrCreate(name string, opts RoomOptions) (*Room, bool, error) {
	if h.closed.Load() {
		return nil, false, ErrRoomClosed
	}
	h.mu.Lock()
	if r := h.rooms[name]; r != nil {
		h.mu.Unlock()
		return r, false, nil
	}
	r := newRoom(h, name, opts)
	h.rooms[name] = r
	h.mu.Unlock()
	h.notify()
	return r, true, nil
}

// Join admits a participant into the named room, creating the room on first join. Events:
// room.started when the room is new, participant.joined; an identity already present leaves
// first with reason duplicate_identity unless spec.RefuseDuplicate is set. While the daemon's
// memory is over its high-water mark, Join refuses with an *OverloadError (auth.failed, reason
// overloaded).
func (h *Hub) Join(room string, spec ParticipantSpec) (*Participant, error) {
	if err := ValidateName(room); err != nil {
		return nil, fmt.Errorf("room %w", err)
	}
	if err := h.admitMemory(spec); err != nil {
		return nil, err
	}
	if spec.Identity == "" {
		spec.Identity = NewID(spec.Kind + "-")[:len(spec.Kind)+9] // kind-XXXXXXXX
	} else if err := ValidateName(spec.Identity); err != nil {
		return nil, fmt.Errorf("identity %w", err)
	}
	for {
		r, _, err := h.getOrCreate(room, RoomOptions{})
		if err != nil {
			return nil, err
		}
		p, err := r.join(spec)
		if errors.Is(err, ErrRoomClosed) {
			continue
		}
		if err == nil {
			h.Settle(room)
		}
		return p, err
	}
}

// DeleteRoom removes every participant (reason room_deleted) and finishes the room.
func (h *Hub) DeleteRoom(name string) error {
	r := h.Room(name)
	if r == nil {
		return ErrRoomNotFound
	}
	r.finish(ReasonRoomDeleted)
	h.Settle(name)
	return nil
}

func (h *Hub) removeRoom(r *Room) {
	h.mu.Lock()
	gone := h.rooms[r.name] == r
	if gone {
		delete(h.rooms, r.name)
	}
	h.mu.Unlock()
	if gone {
		h.notify()
	}
}

func (h *Hub) emitRoom(typ string, r *Room, reason string) {
	h.emit.Emit(&Event{Type: typ, Room: r.Info(), Reason: reason})
}

func (h *Hub) expireRooms(now time.Time) {
	for _, r := range h.Rooms() {
		if r.expired(now) {
			r.finishIfEmpty(now)
		}
	}
}

func (h *Hub) updateRates(now time.Time) {
	for _, r := range h.Rooms() {
		for _, p := range r.Participants() {
			for _, t := range p.Tracks() {
				t.rate.update(now, t.bytes.Load(), t.frames.Load())
				if t.sim != nil {
					t.sim.update(now)
				}
				for _, s := range t.Subscriptions() {
					s.rate.update(now, s.bytesOut.Load(), s.framesOut.Load())
				}
				for _, d := range t.Derived() {
					d.rate.update(now, d.bytes.Load(), d.frames.Load())
					for _, s := range d.Subscriptions() {
						s.rate.update(now, s.bytesOut.Load(), s.framesOut.Load())
					}
				}
			}
		}
	}
}

// watchTracks emits track.interrupted / track.recovered.
func (h *Hub) watchTracks(now time.Time) {
	for _, r := range h.Rooms() {
		for _, p := range r.Participants() {
			for _, t := range p.Tracks() {
				ref := time.Unix(0, t.lastPacketAt.Load())
				if t.lastPacketAt.Load() == 0 {
					ref = t.publishedAt // not started yet: measure from publication
				}
				silent := now.Sub(ref) >= h.cfg.InterruptAfter
				switch {
				case !t.interrupted && silent && !t.Muted():
					p.trackEvent(t, EventTrackInterrupted, func() bool {
						if t.interrupted || t.Closed() {
							return false
						}
						t.interrupted = true
						t.interruptedFlag.Store(true)
						return true
					})
				case t.interrupted && !silent:
					p.trackEvent(t, EventTrackRecovered, func() bool {
						if !t.interrupted || t.Closed() {
							return false
						}
						t.interrupted = false
						t.interruptedFlag.Store(false)
						return true
					})
				}
			}
		}
	}
}

func (h *Hub) emitStats() {
	for _, r := range h.Rooms() {
		for _, p := range r.Participants() {
			for _, s := range p.Streams() {
				s.emitStats()
			}
		}
	}
}
