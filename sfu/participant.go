package sfu

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Participant kinds (the `kind` of the participant object).
const (
	ParticipantWebRTC   = "webrtc"
	ParticipantWHIP     = "whip"
	ParticipantRTMP     = "rtmp"
	ParticipantRTSP     = "rtsp"
	ParticipantRTSPPull = "rtsp_pull"
	ParticipantSRT      = "srt"
	ParticipantHLS      = "hls" // an LL-HLS muxer: one reader shared by its HTTP clients
	// ParticipantComposite is a room's program made by egress/composite.
	ParticipantComposite = "composite"
)

// ParticipantSpec describes a session being admitted to a room.
type ParticipantSpec struct {
	// Identity is unique in the room; empty generates one from Kind.
	Identity   string
	Name       string
	Kind       string
	Metadata   string
	RemoteAddr string
	// RefuseDuplicate makes Join fail with ErrDuplicateIdentity instead of replacing a
	// participant with the same identity.
	RefuseDuplicate bool
}

// Participant is one session in a room: a publisher of tracks, a subscriber, or both. The
// session that joined owns it: it publishes, subscribes, and ends it with Close, the one path
// that releases its tracks, streams and subscriptions. The room may end it too (kick, room
// deleted, shutdown, duplicate identity): Done is then closed and the session tears down its
// connection.
type Participant struct {
	room       *Room
	sid        string
	identity   string
	name       string
	kind       string
	metadata   string
	remoteAddr string
	joinedAt   time.Time
	done       chan struct{}
	data       atomic.Pointer[receiverBox] // takes data packets (SetDataReceiver)
	quality    participantQuality          // participant.quality (quality.go)

	// Guarded by mu; changed only with the room's opMu held.
	mu      sync.Mutex
	tracks  []*Track
	subs    []*Subscription
	streams []*Stream
	closed  bool
	reason  string
}

func newParticipant(r *Room, spec ParticipantSpec) *Participant {
	return &Participant{
		room:       r,
		sid:        NewID(PrefixParticipant),
		identity:   spec.Identity,
		name:       spec.Name,
		kind:       spec.Kind,
		metadata:   spec.Metadata,
		remoteAddr: spec.RemoteAddr,
		joinedAt:   r.hub.clock(),
		done:       make(chan struct{}),
	}
}

// SID returns the participant's server id.
func (p *Participant) SID() string { return p.sid }

// Identity returns the participant's identity, unique in its room.
func (p *Participant) Identity() string { return p.identity }

// Kind returns the participant kind.
func (p *Participant) Kind() string { return p.kind }

// Room returns the participant's room.
func (p *Participant) Room() *Room { return p.room }

// JoinedAt returns when the participant was admitted.
func (p *Participant) JoinedAt() time.Time { return p.joinedAt }

// Done is closed when the participant has left, for whatever cause.
func (p *Participant) Done() <-chan struct{} { return p.done }

// LeaveReason returns why the participant left ("" while present).
func (p *Participant) LeaveReason() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reason
}

// Info returns the event/API object of the participant.
func (p *Participant) Info() *ParticipantInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	return &ParticipantInfo{
		SID:        p.sid,
		Identity:   p.identity,
		Name:       p.name,
		Kind:       p.kind,
		JoinedAt:   p.joinedAt.UTC(),
		Metadata:   p.metadata,
		RemoteAddr: p.remoteAddr,
	}
}

// Tracks returns the participant's published tracks.
func (p *Participant) Tracks() []*Track {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*Track(nil), p.tracks...)
}

// Subscriptions returns the participant's subscriptions.
func (p *Participant) Subscriptions() []*Subscription {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*Subscription(nil), p.subs...)
}

// Streams returns the participant's live streams.
func (p *Participant) Streams() []*Stream {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*Stream(nil), p.streams...)
}

// ParticipantUpdate is a partial change of a participant: nil fields stay as they are.
type ParticipantUpdate struct {
	Name     *string
	Metadata *string
}

// Update applies u and emits one participant.updated when something changed. Safe for
// concurrent use; the emit happens outside the participant's lock.
func (p *Participant) Update(u ParticipantUpdate) error {
	defer p.settle()
	changed := false
	err := p.op(func() error {
		p.mu.Lock()
		if u.Name != nil && *u.Name != p.name {
			p.name, changed = *u.Name, true
		}
		if u.Metadata != nil && *u.Metadata != p.metadata {
			p.metadata, changed = *u.Metadata, true
		}
		p.mu.Unlock()
		if changed {
			p.emit(EventParticipantUpdated, nil, "", nil)
		}
		return nil
	})
	if changed {
		p.room.notify() // watchers of the room (LiveKit sessions) relay the change
	}
	return err
}

// SetName changes the participant's display name (participant.updated when it changed).
func (p *Participant) SetName(name string) error { return p.Update(ParticipantUpdate{Name: &name}) }

// SetMetadata changes the participant's metadata (participant.updated when it changed).
func (p *Participant) SetMetadata(metadata string) error {
	return p.Update(ParticipantUpdate{Metadata: &metadata})
}

// Track returns the published track with that sid, or nil.
func (p *Participant) Track(sid string) *Track {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range p.tracks {
		if t.sid == sid {
			return t
		}
	}
	return nil
}

// Publish adds a track (track.published) and returns it for the producer to write to.
func (p *Participant) Publish(spec TrackSpec) (*Track, error) {
	if spec.Codec.Name == "" || spec.Codec.ClockRate == 0 {
		return nil, fmt.Errorf("publish: codec name and clock rate are required")
	}
	if spec.Source == "" {
		spec.Source = SourceIngest
	}
	var t *Track
	err := p.op(func() error {
		t = newTrack(p, spec)
		t.publishedAt = p.room.hub.clock()
		p.mu.Lock()
		p.tracks = append(p.tracks, t)
		p.mu.Unlock()
		p.emit(EventTrackPublished, t.Info(), "", nil)
		p.streamsTracksChangedLocked()
		return nil
	})
	if err != nil {
		return nil, err
	}
	p.room.notify()
	p.settle()
	return t, nil
}

// Unpublish removes a track (track.unpublished, then track.unsubscribed for each subscribing
// participant) and ends its fan-out.
func (p *Participant) Unpublish(t *Track, reason string) error {
	err := p.op(func() error {
		p.mu.Lock()
		found := false
		for i, o := range p.tracks {
			if o == t {
				p.tracks = append(p.tracks[:i:i], p.tracks[i+1:]...)
				found = true
				break
			}
		}
		p.mu.Unlock()
		if !found {
			return ErrTrackClosed
		}
		p.endTrackLocked(t, reason)
		p.streamsTracksChangedLocked()
		return nil
	})
	if err != nil {
		return err
	}
	p.room.notify()
	p.settle()
	return nil
}

// SetTrackMuted records the publisher's mute state (track.muted / track.unmuted).
func (p *Participant) SetTrackMuted(t *Track, muted bool) error {
	changed := false
	err := p.op(func() error {
		if t.Closed() || t.muted.Swap(muted) == muted {
			return nil
		}
		changed = true
		typ := EventTrackUnmuted
		if muted {
			typ = EventTrackMuted
		}
		p.emit(typ, t.Info(), "", nil)
		return nil
	})
	if changed {
		p.room.notify()
	}
	return err
}

// SetTrackSize records a new video resolution (track.updated when it changed; a derived
// track, which is never announced, changes silently).
func (p *Participant) SetTrackSize(t *Track, width, height int) error {
	return p.op(func() error {
		if t.Closed() || (int(t.width.Load()) == width && int(t.height.Load()) == height) {
			return nil
		}
		t.width.Store(int32(width))
		t.height.Store(int32(height))
		if t.from == nil {
			p.emit(EventTrackUpdated, t.Info(), "", nil)
		}
		return nil
	})
}

// Subscribe attaches sink to t for this participant (track.subscribed). End it with
// Unsubscribe, or let Close do it.
func (p *Participant) Subscribe(t *Track, sink Sink, opts SubscribeOptions) (*Subscription, error) {
	var s *Subscription
	err := p.op(func() error {
		var err error
		s, err = t.Subscribe(sink, opts)
		if err != nil {
			return err
		}
		s.subscriber = p
		p.mu.Lock()
		p.subs = append(p.subs, s)
		p.mu.Unlock()
		p.emit(EventTrackSubscribed, t.Info(), "", nil)
		p.streamsTracksChangedLocked()
		return nil
	})
	if err != nil {
		if s != nil {
			s.Close()
		}
		return nil, err
	}
	p.settle()
	return s, nil
}

// Unsubscribe ends a subscription of this participant (track.unsubscribed, unless its track's
// end already reported it) and waits for its goroutine. Must not be called from the sink.
func (p *Participant) Unsubscribe(s *Subscription) {
	_ = p.op(func() error {
		p.dropSubLocked(s)
		return nil
	})
	s.Close()
	p.settle()
}

// SubscriptionFailed reports that t could not be delivered to this participant
// (track.subscription_failed with err).
func (p *Participant) SubscriptionFailed(t *Track, code string, err error) {
	_ = p.op(func() error {
		p.emit(EventTrackSubscriptionFailed, t.Info(), "", &ErrorInfo{Code: code, Message: err.Error()})
		return nil
	})
}

// Close ends the participant: its tracks are unpublished, its streams end with reason (or
// stream.failed when err is not nil), its subscriptions end, and it leaves the room
// (participant.left). Idempotent; must not be called from a Sink callback.
func (p *Participant) Close(reason string, err error) {
	p.leave(reason, err)
	p.settle()
}

// leave is Close without waiting for the events to be stored, for the hub's housekeeping.
func (p *Participant) leave(reason string, err error) {
	r := p.room
	r.opMu.Lock()
	subs := p.closeLocked(reason, err)
	r.opMu.Unlock()
	closeSubs(subs)
	r.notify()
}

// closeLocked is Close with the room's opMu held; it returns the subscriptions for the caller to
// close once the lock is released.
func (p *Participant) closeLocked(reason string, err error) []*Subscription {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.reason = reason
	tracks, subs, streams := p.tracks, p.subs, p.streams
	p.tracks, p.subs, p.streams = nil, nil, nil
	p.mu.Unlock()

	for _, t := range tracks {
		p.endTrackLocked(t, reason)
	}
	for _, s := range subs {
		p.unsubscribedLocked(s)
	}
	for _, s := range streams {
		s.endLocked(reason, err)
	}
	p.room.remove(p)
	p.emit(EventParticipantLeft, nil, reason, nil)
	close(p.done)
	return subs
}

// streamsTracksChangedLocked tells the live streams that the track set changed; opMu held.
func (p *Participant) streamsTracksChangedLocked() {
	for _, s := range p.Streams() {
		s.tracksChangedLocked()
	}
}

// endTrackLocked reports the end of t and closes its fan-out; opMu held.
func (p *Participant) endTrackLocked(t *Track, reason string) {
	if reason == "" {
		reason = ReasonUnpublished
	}
	p.emit(EventTrackUnpublished, t.Info(), reason, nil)
	p.dropSubscribersLocked(t)
	for _, d := range t.Derived() {
		p.dropSubscribersLocked(d)
	}
	t.close() // and its derived tracks
	p.room.hub.retireTrack(t)
}

func (p *Participant) dropSubLocked(s *Subscription) {
	p.mu.Lock()
	for i, o := range p.subs {
		if o == s {
			p.subs = append(p.subs[:i:i], p.subs[i+1:]...)
			break
		}
	}
	p.mu.Unlock()
	p.unsubscribedLocked(s)
}

func (p *Participant) unsubscribedLocked(s *Subscription) {
	if s.unsubscribed {
		return
	}
	s.unsubscribed = true
	p.emit(EventTrackUnsubscribed, s.track.Info(), "", nil)
}

// settle waits, bounded, for the room's events to be stored; called with no lock held by the
// operations whose change the session acknowledges to its client.
func (p *Participant) settle() { p.room.hub.Settle(p.room.name) }

// op runs fn as one state change of the room, refused once the participant has left.
func (p *Participant) op(fn func() error) error {
	p.room.opMu.Lock()
	defer p.room.opMu.Unlock()
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return ErrParticipantClosed
	}
	return fn()
}

// trackEvent emits a watchdog event for t if cond (run under the op lock) allows it.
func (p *Participant) trackEvent(t *Track, typ string, cond func() bool) {
	_ = p.op(func() error {
		if cond() {
			p.emit(typ, t.Info(), "", nil)
		}
		return nil
	})
}

func (p *Participant) emit(typ string, t *TrackInfo, reason string, e *ErrorInfo) {
	p.room.hub.emit.Emit(&Event{
		Type:        typ,
		Room:        p.room.Info(),
		Participant: p.Info(),
		Track:       t,
		Reason:      reason,
		Error:       e,
	})
}

// IsClosed reports whether err says the participant or its room is gone.
func IsClosed(err error) bool {
	return errors.Is(err, ErrParticipantClosed) || errors.Is(err, ErrRoomClosed) || errors.Is(err, ErrTrackClosed)
}
