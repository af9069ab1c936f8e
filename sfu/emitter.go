package sfu

import (
	"context"
	"sync"
	"time"
)

// Emitter takes every event of the daemon. Emit fills ID (when empty) and Time (when zero) and
// never waits for I/O, so it may be called with a room's lock held. An emitter that stores later
// (EventQueue) is also a Settler: the change an event reports is acknowledged only after
// Settle, called with no lock held. Safe for concurrent use. Callers emit the events of one
// object from one place in order; Emit keeps the order of calls it receives per room.
type Emitter interface {
	Emit(ev *Event)
}

// Settle calls e.Settle(room) when e is a Settler; see Hub.Settle.
func Settle(e Emitter, room string) {
	if s, ok := e.(Settler); ok {
		s.Settle(room)
	}
}

// EmitterFunc adapts a function to Emitter.
type EmitterFunc func(ev *Event)

// Emit calls f(ev).
func (f EmitterFunc) Emit(ev *Event) { f(ev) }

// Stamp fills the envelope fields an emitter owns when the caller left them empty: ID and Time.
func Stamp(ev *Event, now time.Time) {
	if ev.ID == "" {
		ev.ID = NewID("evt_")
	}
	if ev.Time.IsZero() {
		ev.Time = now.UTC()
	}
}

// LocalEmitter is an in-process emitter with a sequence counter and a bounded history, used
// when no durable log is configured and in tests. Subscribers get events through Events.
type LocalEmitter struct {
	mu      sync.Mutex
	seq     uint64
	history []Event
	limit   int
	clock   func() time.Time
}

// NewLocalEmitter returns an emitter keeping the last limit events (limit <= 0 keeps 10,000).
func NewLocalEmitter(limit int, clock func() time.Time) *LocalEmitter {
	if limit <= 0 {
		limit = 10000
	}
	if clock == nil {
		clock = time.Now
	}
	return &LocalEmitter{limit: limit, clock: clock}
}

// Emit records ev and assigns the next sequence number.
func (l *LocalEmitter) Emit(ev *Event) {
	Stamp(ev, l.clock())
	l.mu.Lock()
	l.seq++
	ev.Seq = l.seq
	l.history = append(l.history, *ev)
	if len(l.history) > l.limit {
		l.history = append(l.history[:0:0], l.history[len(l.history)-l.limit:]...)
	}
	l.mu.Unlock()
}

// Write records ev like Emit; it makes the local emitter an in-memory Store for an EventQueue.
func (l *LocalEmitter) Write(_ context.Context, ev *Event) error {
	l.Emit(ev)
	return nil
}

// Events returns a copy of the recorded events with Seq > since, in order.
func (l *LocalEmitter) Events(since uint64) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Event, 0, len(l.history))
	for _, ev := range l.history {
		if ev.Seq > since {
			out = append(out, ev)
		}
	}
	return out
}
