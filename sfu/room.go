package sfu

import (
	"fmt"
	"sync"
	"time"
)

// Room holds participants. It is created on first join or by the API and finishes when its last
// participant has been gone for the empty timeout, when deleted, or at shutdown.
//
// Locking: opMu serializes every state change of the room together with the events that report
// it, so that the events of one room are emitted (and get their seq) in the order the changes
// happened. mu guards the fields and is only held for reads and writes of them, never across a
// call out. opMu is taken before mu and before Hub.mu, never the other way.
type Room struct {
	hub       *Hub
	name      string
	sid       string
	createdAt time.Time

	opMu    sync.Mutex
	started bool // room.started emitted (guarded by opMu)

	mu           sync.Mutex
	participants []*Participant // join order
	metadata     string
	closed       bool
	emptySince   time.Time
	emptyTimeout time.Duration

	changed signal // fired at each change of the room

	speakers       speakerSet   // the active speakers, for watchers (speakers.go)
	speakerEval    speakerState // owned by the hub's housekeeping
	qualityChanged signal       // fired at each participant.quality (quality.go)
}

func newRoom(h *Hub, name string, opts RoomOptions) *Room {
	now := h.clock()
	timeout := opts.EmptyTimeout
	if timeout <= 0 {
		timeout = h.cfg.EmptyTimeout
	}
	return &Room{
		hub:          h,
		name:         name,
		sid:          NewID(PrefixRoom),
		createdAt:    now,
		metadata:     opts.Metadata,
		emptySince:   now,
		emptyTimeout: timeout,
	}
}

// Name returns the room's name.
func (r *Room) Name() string { return r.name }

// SID returns the room's server id.
func (r *Room) SID() string { return r.sid }

// Info returns the event/API object of the room.
func (r *Room) Info() *RoomInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	return &RoomInfo{
		Name:         r.name,
		SID:          r.sid,
		CreatedAt:    r.createdAt.UTC(),
		Participants: len(r.participants),
		Metadata:     r.metadata,
	}
}

// Changed returns the room's change signal: a channel closed at the next change of its
// participants, tracks, mutes or metadata (or its end). Watchers of one room take it, re-read
// the room, wait on it and take it again; other rooms' changes do not wake them.
func (r *Room) Changed() <-chan struct{} { return r.changed.wait() }

// notify reports a change of the room's participants, tracks or metadata on the room's signal
// and the hub-wide one.
func (r *Room) notify() {
	r.changed.fire()
	r.hub.notify()
}

// Participants returns the room's participants in join order.
func (r *Room) Participants() []*Participant {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*Participant(nil), r.participants...)
}

// Participant returns the participant with that identity, or nil.
func (r *Room) Participant(identity string) *Participant {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.participants {
		if p.identity == identity {
			return p
		}
	}
	return nil
}

// MainPublisher returns the earliest-joined participant still publishing video, or nil: the
// default source of WHEP, RTSP play and broadcasts (see Selector).
func (r *Room) MainPublisher() *Participant {
	video := Selector{Kind: KindVideo}
	for _, p := range r.Participants() {
		if len(video.Tracks(p)) > 0 {
			return p
		}
	}
	return nil
}

// Closed reports whether the room has finished.
func (r *Room) Closed() bool { return r.isClosed() }

func (r *Room) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// SetMetadata changes the room's metadata (room.updated).
func (r *Room) SetMetadata(md string) error {
	r.opMu.Lock()
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		r.opMu.Unlock()
		return ErrRoomClosed
	}
	changed := r.metadata != md
	r.metadata = md
	r.mu.Unlock()
	if changed {
		r.hub.emitRoom(EventRoomUpdated, r, "")
		r.notify()
	}
	r.opMu.Unlock()
	r.hub.Settle(r.name)
	return nil
}

// Kick removes the participant with that identity (participant.left, reason removed).
func (r *Room) Kick(identity string) error {
	p := r.Participant(identity)
	if p == nil {
		return ErrParticipantNotFound
	}
	p.Close(ReasonRemoved, nil)
	return nil
}

func (r *Room) join(spec ParticipantSpec) (*Participant, error) {
	var replaced *Participant
	r.opMu.Lock()
	if r.isClosed() {
		r.opMu.Unlock()
		return nil, ErrRoomClosed
	}
	if !r.started {
		r.started = true
		r.hub.emitRoom(EventRoomStarted, r, "")
	}
	if old := r.Participant(spec.Identity); old != nil {
		if spec.RefuseDuplicate {
			r.opMu.Unlock()
			return nil, fmt.Errorf("%w: %s", ErrDuplicateIdentity, spec.Identity)
		}
		replaced = old
	}
	var toClose []*Subscription
	if replaced != nil {
		toClose = replaced.closeLocked(ReasonDuplicateIdentity, nil)
	}
	p := newParticipant(r, spec)
	r.mu.Lock()
	r.participants = append(r.participants, p)
	r.mu.Unlock()
	r.hub.emit.Emit(&Event{Type: EventParticipantJoined, Room: r.Info(), Participant: p.Info()})
	r.opMu.Unlock()
	closeSubs(toClose)
	r.notify()
	return p, nil
}

// remove drops p from the member list; called with opMu held.
func (r *Room) remove(p *Participant) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, o := range r.participants {
		if o == p {
			r.participants = append(r.participants[:i:i], r.participants[i+1:]...)
			break
		}
	}
	if len(r.participants) == 0 {
		r.emptySince = r.hub.clock()
	}
}

func (r *Room) expired(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.closed && len(r.participants) == 0 && now.Sub(r.emptySince) >= r.emptyTimeout
}

func (r *Room) finishIfEmpty(now time.Time) {
	r.opMu.Lock()
	if !r.expired(now) {
		r.opMu.Unlock()
		return
	}
	r.finishLocked(ReasonEmptyTimeout)
}

// finish removes every participant with reason and ends the room (room.finished).
func (r *Room) finish(reason string) {
	r.opMu.Lock()
	if r.isClosed() {
		r.opMu.Unlock()
		return
	}
	r.finishLocked(reason)
}

// finishLocked ends the room; called with opMu held, releases it.
func (r *Room) finishLocked(reason string) {
	var toClose []*Subscription
	for _, p := range r.Participants() {
		toClose = append(toClose, p.closeLocked(reason, nil)...)
	}
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.hub.removeRoom(r)
	if r.started {
		if reason == ReasonRoomDeleted {
			reason = ReasonDeleted // room.finished's own reason list (shared/EVENTS.md, Additions)
		}
		r.hub.emitRoom(EventRoomFinished, r, reason)
	}
	r.opMu.Unlock()
	closeSubs(toClose)
	r.notify()
}

func closeSubs(subs []*Subscription) {
	for _, s := range subs {
		s.Close()
	}
}
