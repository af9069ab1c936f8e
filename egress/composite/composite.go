// Package composite makes one program of a whole room: every participant's video in a layout
// (grid, speaker, single) and everyone's audio mixed, published back into the room as the
// participant "composite", which broadcasts, recordings, WHEP viewers and RTSP readers then
// follow like any other. No browser: each participant's tracks are decoded by an ffmpeg child to
// small raw pictures and 48 kHz samples, the picture is composed and the audio mixed here, and
// one ffmpeg encoder makes H.264 and AAC of it. The encoder's input is paced by the wall clock,
// so its output is continuous whatever the participants do: a layout change is only a different
// drawing, and a restarted encoder continues the same tracks' timeline.
package composite

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-media/sluice/egress"
	"github.com/sluice-media/sluice/sfu"
)

// Identity is the composite participant's identity in its room.
const Identity = "composite"

// Spec is what a composite makes.
type Spec struct {
	Room   string
	Layout string
	// Focus pins the large tile (single and speaker) to one participant; "" lets the
	// composite choose (the speaker, else the latest arrival).
	Focus            string
	Width, Height    int
	FPS              int
	BitrateKbps      int
	KeyframeInterval time.Duration
	Labels           bool
}

// Defaults fills what s leaves zero and checks the rest.
func (s *Spec) Defaults() error {
	if s.Layout == "" {
		s.Layout = LayoutGrid
	}
	if err := ValidLayout(s.Layout); err != nil {
		return err
	}
	if s.Width == 0 && s.Height == 0 {
		s.Width, s.Height = 1280, 720
	}
	if s.FPS == 0 {
		s.FPS = 30
	}
	if s.BitrateKbps == 0 {
		s.BitrateKbps = 3000
	}
	if s.KeyframeInterval == 0 {
		s.KeyframeInterval = 2 * time.Second
	}
	switch {
	case s.Width < 160 || s.Height < 90 || s.Width > 3840 || s.Height > 2160 || s.Width%4 != 0 || s.Height%4 != 0:
		return fmt.Errorf("size %dx%d: want 160x90 to 3840x2160, multiples of 4", s.Width, s.Height)
	case s.FPS < 1 || s.FPS > 60:
		return fmt.Errorf("frame rate %d: want 1 to 60", s.FPS)
	case s.BitrateKbps < 100 || s.BitrateKbps > 50000:
		return fmt.Errorf("bitrate %d kbit/s: want 100 to 50000", s.BitrateKbps)
	case s.KeyframeInterval < 100*time.Millisecond || s.KeyframeInterval > 20*time.Second:
		return fmt.Errorf("keyframe interval %s: want 100ms to 20s", s.KeyframeInterval)
	}
	return nil
}

// Info is a composite as events and the API show it.
type Info struct {
	Layout       string   `json:"layout"`
	Participants []string `json:"participants"`
	Focus        string   `json:"focus,omitempty"`
	Speaker      string   `json:"speaker,omitempty"`
	// Restarts counts the encoder's restarts (a crash or a stall); the output goes on.
	Restarts int `json:"restarts,omitempty"`
}

// Composite is one room's program. Its goroutines (the run loop, the composer, the mixer and the
// supervised encoder) are owned by it and end with Close.
type Composite struct {
	m      *Manager
	spec   Spec
	self   *sfu.Participant
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	epoch  time.Time
	sink   atomic.Pointer[sink]
	encPID atomic.Int64 // the running encoder's process id (for tests and status)
	out    output

	refs int // holders, guarded by m.mu

	mu       sync.Mutex
	inputs   map[string]*input
	layout   string
	focus    string
	restarts int
	changed  chan struct{} // closed and replaced at every change of Info
	speaker  atomic.Pointer[string]
}

// input is one participant in the composite.
type input struct {
	identity string
	name     *label
	screen   bool
	joined   int64 // when the participant joined (Unix ns): the order of the tiles
	f        *sfu.Follower
	video    *decoder
	audio    *decoder
	pcm      *pcmSource

	picMu sync.Mutex
	pic   *frame // the latest picture, nil before the first
}

// since is the composite's time at t, in 90 kHz ticks.
func (c *Composite) since(t time.Time) int64 {
	return int64(t.Sub(c.epoch)) * 90000 / int64(time.Second)
}

// Room is the composite's room.
func (c *Composite) Room() string { return c.spec.Room }

// Spec is what the composite was started with (the layout as it is now).
func (c *Composite) Spec() Spec {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.spec
	s.Layout, s.Focus = c.layout, c.focus
	return s
}

// Info is the composite's layout and participants now.
func (c *Composite) Info() Info {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.infoLocked()
}

func (c *Composite) infoLocked() Info {
	in := Info{Layout: c.layout, Focus: c.focus, Participants: []string{}, Restarts: c.restarts}
	for _, i := range c.ordered() {
		in.Participants = append(in.Participants, i.identity)
	}
	if s := c.speaker.Load(); s != nil {
		in.Speaker = *s
	}
	return in
}

// Reasons of the updated events of what follows a composite.
const (
	// ReasonLayoutChanged: the layout or the participants in the picture changed.
	ReasonLayoutChanged = "layout_changed"
	// ReasonCompositorRestarted: the encoder crashed or stalled and was restarted.
	ReasonCompositorRestarted = "compositor_restarted"
)

// ChangeReason is the reason of a change from prev to now.
func ChangeReason(prev, now Info) string {
	if now.Restarts > prev.Restarts {
		return ReasonCompositorRestarted
	}
	return ReasonLayoutChanged
}

// Changed is closed at the next change of Info's layout, participants or restarts.
func (c *Composite) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

func (c *Composite) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// SetLayout changes the layout (and the participant single shows; "" keeps the choice to the
// composite). The output goes on uninterrupted.
func (c *Composite) SetLayout(layout, focus string) error {
	if err := ValidLayout(layout); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.layout != layout || c.focus != focus {
		c.layout, c.focus = layout, focus
		c.notifyLocked()
	}
	return nil
}

// Done is closed when the composite has ended.
func (c *Composite) Done() <-chan struct{} { return c.self.Done() }

func (c *Composite) ordered() []*input {
	out := make([]*input, 0, len(c.inputs))
	for _, i := range c.inputs {
		out = append(out, i)
	}
	slices.SortFunc(out, func(a, b *input) int {
		return cmp.Or(cmp.Compare(a.joined, b.joined), cmp.Compare(a.identity, b.identity))
	})
	return out
}

// run follows the room: an input per participant, updated at every hub change, until the
// composite closes or its participant is removed. A room left with nobody to show for
// Config.EmptyTimeout ends the composite (its participant leaves, and the broadcasts and
// recordings that follow it see their source go).
func (c *Composite) run() {
	defer c.wg.Done()
	defer c.closeInputs()
	var empty *time.Timer
	var emptyC <-chan time.Time
	defer func() {
		if empty != nil {
			empty.Stop()
		}
	}()
	for {
		changed := c.m.hub.Changed()
		n := c.reconcile()
		switch {
		case n > 0 && empty != nil:
			empty.Stop()
			empty, emptyC = nil, nil
		case n == 0 && empty == nil:
			empty = time.NewTimer(c.m.cfg.EmptyTimeout)
			emptyC = empty.C
		}
		select {
		case <-changed:
		case <-emptyC:
			c.log.Info("composite ends: nobody to show", "after", c.m.cfg.EmptyTimeout)
			c.self.Close(sfu.ReasonSourceEnded, nil)
			c.cancel()
			return
		case <-c.ctx.Done():
			return
		case <-c.self.Done():
			c.cancel()
			return
		}
	}
}

// wanted reports whether p appears in the composite: a participant with tracks, or a person
// in a room (WebRTC) without any, who gets a tile with their name.
func wanted(p *sfu.Participant) bool {
	if p.Identity() == Identity {
		return false
	}
	return len(p.Tracks()) > 0 || p.Kind() == sfu.ParticipantWebRTC
}

// reconcile brings the inputs in line with the room; it returns how many there are.
func (c *Composite) reconcile() int {
	room := c.m.hub.Room(c.spec.Room)
	present := map[string]*sfu.Participant{}
	if room != nil {
		for _, p := range room.Participants() {
			if wanted(p) {
				present[p.Identity()] = p
			}
		}
	}
	c.mu.Lock()
	var gone []*input
	for id, in := range c.inputs {
		if present[id] == nil {
			gone = append(gone, in)
			delete(c.inputs, id)
		}
	}
	var fresh []*input
	for id, p := range present {
		in := c.inputs[id]
		if in == nil {
			in = c.newInput(id, p)
			c.inputs[id] = in
			fresh = append(fresh, in)
		}
		in.screen = hasScreen(p)
	}
	if len(gone) > 0 || len(fresh) > 0 {
		c.notifyLocked()
	}
	all := c.ordered()
	c.mu.Unlock()
	for _, in := range gone {
		in.close()
	}
	for _, in := range all {
		in.f.Update() // the follower's owner is this goroutine
	}
	return len(all)
}

func hasScreen(p *sfu.Participant) bool {
	for _, t := range p.Tracks() {
		if t.Kind() == sfu.KindVideo && t.Source() == "screen_share" && !t.Closed() {
			return true
		}
	}
	return false
}

func (c *Composite) newInput(id string, p *sfu.Participant) *input {
	name := p.Info().Name
	if name == "" {
		name = id
	}
	in := &input{identity: id, name: newLabel(name), joined: p.JoinedAt().UnixNano(), pcm: &pcmSource{}}
	log := c.log.With("participant", id)
	in.video = &decoder{kind: sfu.KindVideo, ffmpeg: c.m.cfg.FFmpeg, log: log, w: c.spec.Width / 2, h: c.spec.Height / 2,
		onPicture: in.setPicture}
	in.audio = &decoder{kind: sfu.KindAudio, ffmpeg: c.m.cfg.FFmpeg, log: log, onSamples: in.pcm.write}
	in.f = sfu.NewFollower(c.m.hub, sfu.FollowerSpec{Room: c.spec.Room, Select: sfu.Selector{Identity: id},
		Subscriber: c.self, Legs: []sfu.Leg{
			{Kind: sfu.KindVideo, Takes: decodable(sfu.KindVideo), Sink: in.video, Switched: in.video.switched},
			{Kind: sfu.KindAudio, Takes: decodable(sfu.KindAudio), Sink: in.audio, Switched: in.audio.switched},
		}})
	return in
}

// setPicture makes the decoder's picture the latest and gives back the previous one for the
// next (the decoder's goroutine): no copy.
func (in *input) setPicture(f *frame) *frame {
	in.picMu.Lock()
	defer in.picMu.Unlock()
	old := in.pic
	in.pic = f
	if old == nil || old.w != f.w || old.h != f.h {
		old = newFrame(f.w, f.h)
	}
	return old
}

// close ends the input: its processes first (a sink blocked on one returns), then its
// subscriptions.
func (in *input) close() {
	in.video.close()
	in.audio.close()
	in.f.Close()
}

func (c *Composite) closeInputs() {
	c.mu.Lock()
	all := c.ordered()
	c.inputs = map[string]*input{}
	c.mu.Unlock()
	for _, in := range all {
		in.close()
		in.pcm.mu.Lock()
		c.log.Debug("composite: input ended", "participant", in.identity, "audio_underruns", in.pcm.underruns, "audio_dropped_samples", in.pcm.overruns)
		in.pcm.mu.Unlock()
	}
}

// compose draws the picture at the frame rate and writes it to the running encoder, as many
// pictures as the encoder's clock says are due (it never runs ahead of or behind the wall
// clock for long: the output's timestamps are the encoder's frame count).
func (c *Composite) compose() {
	defer c.wg.Done()
	canvas := newFrame(c.spec.Width, c.spec.Height)
	scalers := map[string]*scaler{}
	var last []placement
	c.pace(time.Second/time.Duration(c.spec.FPS), int64(c.spec.FPS),
		func() { last = c.draw(canvas, scalers, last) },
		func(s *sink) error {
			_, err := s.video.Write(canvas.buf)
			return err
		})
}

// pace runs at every period of the running encoder's clock until the composite closes: prepare
// once, then emit once per period due since the encoder's start (skipping ahead when more than
// maxBehind are due: the machine stalled). A failed emit drops the rest of the due periods (the
// encoder ended; the next one has another sink).
func (c *Composite) pace(period time.Duration, maxBehind int64, prepare func(), emit func(*sink) error) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	var cur *sink
	var written int64
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-tick.C:
		}
		s := c.sink.Load()
		if s == nil {
			continue
		}
		if s != cur {
			cur, written = s, 0
		}
		due := int64(time.Since(s.start)/period) + 1
		if due <= written {
			continue
		}
		if due-written > maxBehind {
			written = due - 1
		}
		prepare()
		for ; written < due; written++ {
			if emit(s) != nil {
				break
			}
		}
	}
}

// draw paints the current layout; the background is painted again only when the layout differs
// from last (the tiles cover their own rectangles every time). It returns the layout.
func (c *Composite) draw(canvas *frame, scalers map[string]*scaler, last []placement) []placement {
	c.mu.Lock()
	inputs := c.ordered()
	layout, focus := c.layout, c.focus
	members := make([]member, 0, len(inputs))
	byID := make(map[string]*input, len(inputs))
	for _, in := range inputs {
		members = append(members, member{identity: in.identity, screen: in.screen, joined: in.joined})
		byID[in.identity] = in
	}
	c.mu.Unlock()
	main := focus
	if main == "" && layout == LayoutSpeaker {
		if s := c.speaker.Load(); s != nil {
			main = *s
		}
	}
	places := arrange(layout, canvas.w, canvas.h, members, main)
	if !slices.Equal(places, last) {
		canvas.fill(rect{0, 0, canvas.w, canvas.h}, background)
	}
	for _, pl := range places {
		in := byID[pl.identity]
		in.picMu.Lock()
		noPicture := in.pic == nil
		if noPicture {
			canvas.fill(pl.r, tileColour)
		} else {
			sc := scalers[in.identity]
			if sc == nil || sc.dst != pl.r || sc.sw != in.pic.w || sc.sh != in.pic.h {
				sc = newScaler(in.pic.w, in.pic.h, pl.r)
				scalers[in.identity] = sc
			}
			sc.draw(canvas, in.pic)
		}
		in.picMu.Unlock()
		if c.spec.Labels || noPicture {
			in.name.stamp(canvas, pl.r)
		}
	}
	return places
}

// mix writes 20 ms of mixed audio to the running encoder per 20 ms of its clock.
func (c *Composite) mix() {
	defer c.wg.Done()
	var m mixer
	sources := map[string]*pcmSource{}
	c.pace(20*time.Millisecond, 50, func() {}, func(s *sink) error {
		c.mu.Lock()
		clear(sources)
		for id, in := range c.inputs {
			sources[id] = in.pcm
		}
		c.mu.Unlock()
		out, speaker := m.mix(sources)
		if old := c.speaker.Load(); speaker != "" && (old == nil || *old != speaker) {
			c.speaker.Store(&speaker)
			c.log.Debug("composite: speaker", "participant", speaker)
		}
		_, err := s.audio.Write(out)
		return err
	})
}

// Close ends the composite: its participant leaves the room (its tracks end).
func (c *Composite) close() {
	c.cancel()
	c.wg.Wait()
	c.self.Close(sfu.ReasonClientDisconnected, nil)
}

// Config configures the manager.
type Config struct {
	FFmpeg  string
	Log     *slog.Logger
	Backoff egress.Backoff
	// OnRestart, when set, is told of each encoder restart (to count and report it).
	OnRestart func(room string, r egress.Retry)
	// EmptyTimeout ends a composite whose room has had nobody to show for this long
	// (default 30 s).
	EmptyTimeout time.Duration
}

// Manager runs at most one composite per room, shared by its holders (broadcasts and
// recordings with a layout).
type Manager struct {
	hub *sfu.Hub
	cfg Config

	mu    sync.Mutex
	rooms map[string]*Composite
}

// NewManager returns a manager of composites in h.
func NewManager(h *sfu.Hub, cfg Config) *Manager {
	if cfg.FFmpeg == "" {
		cfg.FFmpeg = "ffmpeg"
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.EmptyTimeout <= 0 {
		cfg.EmptyTimeout = 30 * time.Second
	}
	return &Manager{hub: h, cfg: cfg, rooms: map[string]*Composite{}}
}

// ErrConflict is returned when a room's composite already runs with another output format.
var ErrConflict = errors.New("the room's composite already runs with another size, rate or bitrate")

// Acquire returns the room's composite, starting it when none runs; release gives it back (the
// last release stops it). A running composite takes spec's layout.
func (m *Manager) Acquire(spec Spec) (*Composite, func(), error) {
	if err := spec.Defaults(); err != nil {
		return nil, nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.rooms[spec.Room]
	if c != nil {
		select {
		case <-c.Done():
			c = nil // ended by itself (kicked, room deleted): start another
		default:
		}
	}
	if c != nil {
		o := c.spec
		if o.Width != spec.Width || o.Height != spec.Height || o.FPS != spec.FPS || o.BitrateKbps != spec.BitrateKbps ||
			o.KeyframeInterval != spec.KeyframeInterval {
			return nil, nil, ErrConflict
		}
		if err := c.SetLayout(spec.Layout, spec.Focus); err != nil {
			return nil, nil, err
		}
	} else {
		var err error
		if c, err = m.start(spec); err != nil {
			return nil, nil, err
		}
		m.rooms[spec.Room] = c
	}
	c.refs++
	var once sync.Once
	return c, func() { once.Do(func() { m.release(c) }) }, nil
}

func (m *Manager) release(c *Composite) {
	m.mu.Lock()
	c.refs--
	last := c.refs == 0
	if last && m.rooms[c.spec.Room] == c {
		delete(m.rooms, c.spec.Room)
	}
	m.mu.Unlock()
	if last {
		c.close()
	}
}

// Get returns the running composite of room, or nil.
func (m *Manager) Get(room string) *Composite {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rooms[room]
}

func (m *Manager) start(spec Spec) (*Composite, error) {
	self, err := m.hub.Join(spec.Room, sfu.ParticipantSpec{Identity: Identity, Name: "composite (" + spec.Layout + ")",
		Kind: sfu.ParticipantComposite, RefuseDuplicate: true})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Composite{m: m, spec: spec, self: self, ctx: ctx, cancel: cancel, epoch: time.Now(),
		log: m.cfg.Log.With("room", spec.Room, "composite", spec.Layout), inputs: map[string]*input{},
		layout: spec.Layout, focus: spec.Focus, changed: make(chan struct{})}
	c.out.self = self
	c.reconcile() // the participants present now are in the first Info
	c.wg.Add(4)
	go c.run()
	go c.compose()
	go c.mix()
	go func() {
		defer c.wg.Done()
		err := egress.Supervise(ctx, c.runEncoder, m.cfg.Backoff, func(r egress.Retry) {
			c.log.Warn("composite: encoder restarting", "attempt", r.Attempt, "err", r.Err, "in", r.Delay)
			c.mu.Lock()
			c.restarts++
			c.notifyLocked()
			c.mu.Unlock()
			if m.cfg.OnRestart != nil {
				m.cfg.OnRestart(spec.Room, r)
			}
		})
		if err != nil {
			c.log.Error("composite: encoder failed", "err", err)
		}
	}()
	c.log.Info("composite started", "size", fmt.Sprintf("%dx%d", spec.Width, spec.Height), "fps", spec.FPS, "kbps", spec.BitrateKbps)
	return c, nil
}

// Close stops every composite (shutdown).
func (m *Manager) Close() {
	m.mu.Lock()
	all := make([]*Composite, 0, len(m.rooms))
	for _, c := range m.rooms {
		all = append(all, c)
	}
	m.rooms = map[string]*Composite{}
	m.mu.Unlock()
	for _, c := range all {
		c.close()
	}
}
