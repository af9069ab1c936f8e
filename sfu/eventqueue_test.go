package sfu

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// stallStore is a Store in front of a LocalEmitter whose writes for one room can be held
// (blocked until released or the write's context ends) and then made to fail.
type stallStore struct {
	*LocalEmitter
	mu      sync.Mutex
	room    string
	held    chan struct{} // closed to release held writes
	failing bool
}

func newStallStore() *stallStore {
	return &stallStore{LocalEmitter: NewLocalEmitter(0, nil)}
}

func (s *stallStore) stall(room string) {
	s.mu.Lock()
	s.room, s.held = room, make(chan struct{})
	s.mu.Unlock()
}

// fail releases held writes as errors until heal.
func (s *stallStore) fail() {
	s.mu.Lock()
	s.failing = true
	close(s.held)
	s.mu.Unlock()
}

func (s *stallStore) heal() {
	s.mu.Lock()
	s.room, s.failing = "", false
	s.mu.Unlock()
}

func (s *stallStore) Write(ctx context.Context, ev *Event) error {
	s.mu.Lock()
	room, held, failing := s.room, s.held, s.failing
	s.mu.Unlock()
	if room != "" && ev.RoomName() == room {
		if failing {
			return errors.New("store failing")
		}
		select {
		case <-held:
			return errors.New("store failing")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.LocalEmitter.Write(ctx, ev)
}

func roomEvent(room string, i int) *Event {
	return &Event{Type: EventRoomUpdated, Room: &RoomInfo{Name: room, Metadata: fmt.Sprint(i)}}
}

// metadataOf returns the Metadata of the stored events of room, in store order.
func metadataOf(evs []Event, room string) []string {
	var out []string
	for _, ev := range evs {
		if ev.RoomName() == room {
			out = append(out, ev.Room.Metadata)
		}
	}
	return out
}

func TestEventQueueStallKeepsOrderAndOtherRooms(t *testing.T) {
	store := newStallStore()
	q, err := NewEventQueue(QueueOptions{Store: store, AckWait: 20 * time.Millisecond, WriteTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	store.stall("a")
	for i := range 50 {
		q.Emit(roomEvent("a", i))
		q.Emit(roomEvent("b", i))
	}
	// room b is stored while room a's writer is held
	waitFor(t, "room b stored", func() bool { return len(metadataOf(store.Events(0), "b")) == 50 })
	q.Settle("a") // runs out: the store is slow
	q.Settle("a") // returns at once now
	if got := testutil.ToFloat64(q.unsettled); got != 2 {
		t.Errorf("unsettled acks = %v, want 2", got)
	}
	store.fail()
	waitFor(t, "retries", func() bool { return testutil.ToFloat64(q.retries) >= 3 })
	if n := len(metadataOf(store.Events(0), "a")); n != 0 {
		t.Fatalf("%d events of a stored while failing", n)
	}
	store.heal()
	if err := q.Close(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	for _, room := range []string{"a", "b"} {
		got := metadataOf(store.Events(0), room)
		if len(got) != 50 {
			t.Fatalf("room %s: %d events stored, want 50", room, len(got))
		}
		for i, md := range got {
			if md != fmt.Sprint(i) {
				t.Fatalf("room %s: event %d is %s: out of order", room, i, md)
			}
		}
	}
	if got := testutil.ToFloat64(q.queued); got != 0 {
		t.Errorf("queued = %v after flush", got)
	}
}

func TestEventQueueFullDropsAndCounts(t *testing.T) {
	store := newStallStore()
	q, err := NewEventQueue(QueueOptions{Store: store, Buffer: 10})
	if err != nil {
		t.Fatal(err)
	}
	store.stall("a")
	for i := range 15 {
		q.Emit(roomEvent("a", i))
	}
	if got := testutil.ToFloat64(q.dropped.WithLabelValues("buffer_full")); got != 5 {
		t.Errorf("dropped = %v, want 5", got)
	}
	store.heal()
	close(store.held)
	if err := q.Close(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	got := metadataOf(store.Events(0), "a")
	if len(got) != 10 || got[0] != "0" || got[9] != "9" {
		t.Errorf("stored %v, want the first 10", got)
	}
}

func TestEventQueueCloseGivesUpOnDeadStore(t *testing.T) {
	store := newStallStore()
	q, err := NewEventQueue(QueueOptions{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	store.stall("a")
	for i := range 3 {
		q.Emit(roomEvent("a", i))
	}
	q.Emit(roomEvent("b", 0))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := q.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want deadline exceeded", err)
	}
	if got := testutil.ToFloat64(q.dropped.WithLabelValues("shutdown")); got != 3 {
		t.Errorf("dropped at shutdown = %v, want 3", got)
	}
	q.Emit(roomEvent("b", 1)) // after Close: counted, not queued
	if got := testutil.ToFloat64(q.dropped.WithLabelValues("shutdown")); got != 4 {
		t.Errorf("dropped after close = %v, want 4", got)
	}
	if got := metadataOf(store.Events(0), "b"); len(got) != 1 {
		t.Errorf("room b stored %v, want its one event", got)
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// BenchmarkEventQueueEmit is the cost a room pays to emit under its lock: stamping and queueing
// one event (the writer stores it on its own goroutine).
func BenchmarkEventQueueEmit(b *testing.B) {
	q, err := NewEventQueue(QueueOptions{Store: NewLocalEmitter(1000, nil), Buffer: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	room := &RoomInfo{Name: "bench"}
	b.ReportAllocs()
	for b.Loop() {
		q.Emit(&Event{Type: EventRoomUpdated, Room: room})
	}
	if err := q.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
}
