package sfu

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Store writes events durably, one call per event. Write returns nil once ev is stored, having
// set ev.Seq; after an error the same event may be written again (the store keeps one copy of an
// event ID). Safe for concurrent use.
type Store interface {
	Write(ctx context.Context, ev *Event) error
}

// Settler is an Emitter that stores events after Emit returns. Settle waits, for a bounded
// time, until the events of room emitted so far are stored. Operations whose change a client
// is told about call it after releasing their locks, so that the event is on disk before the
// acknowledgement while no lock waits for the store.
type Settler interface {
	Settle(room string)
}

// Defaults of QueueOptions (and of the events: section that sets them).
const (
	DefaultEventBuffer  = 10000
	DefaultEventAckWait = 50 * time.Millisecond
)

// QueueOptions build an EventQueue.
type QueueOptions struct {
	Store Store
	// Buffer bounds the events waiting for the store, all rooms together (default
	// DefaultEventBuffer).
	// Past it new events are dropped, counted and logged.
	Buffer int
	// AckWait bounds one Settle (default DefaultEventAckWait). Once a wait runs out or a write fails, Settle
	// returns at once until the store stores an event again.
	AckWait time.Duration
	// WriteTimeout bounds one write attempt (default 2s); failed attempts are retried.
	WriteTimeout time.Duration
	Logger       *slog.Logger
	// Clock stamps events; time.Now when nil.
	Clock func() time.Time
}

// EventQueue is the daemon's Emitter in front of a durable Store: Emit stamps the event, appends
// it to its room's queue and returns; one goroutine per room with waiting events writes them in
// order, retrying a failing store, so that the events of a room keep their order and a slow
// room never delays another. Events without a room share one queue.
//
// Lifecycle: NewEventQueue starts nothing; Emit starts a room's writer when needed; Close stops
// taking events and flushes what is queued until its context ends. Emit and Settle are safe for
// concurrent use, also after Close.
type EventQueue struct {
	opts  QueueOptions
	log   *slog.Logger
	ctx   context.Context // cancelled when Close gives up: in-flight writes abort
	abort context.CancelFunc
	wg    sync.WaitGroup

	mu      sync.Mutex
	rooms   map[string]*roomQueue // rooms with events waiting or being written
	waiting int                   // events in all room queues
	closed  bool
	full    bool   // dropping since the buffer filled
	lostRun uint64 // events dropped in the current full episode

	healthy atomic.Bool // the last write succeeded and no Settle ran out
	failing atomic.Bool // a write failed and none succeeded since (for the log lines)

	queued    prometheus.Gauge
	stored    prometheus.Counter
	dropped   *prometheus.CounterVec
	retries   prometheus.Counter
	unsettled prometheus.Counter
}

// roomQueue holds one room's events in emit order; the head is being written.
type roomQueue struct {
	events  []*Event
	emitted uint64        // events ever appended
	done    uint64        // events stored or dropped
	changed chan struct{} // closed when done grows
}

// NewEventQueue validates opts and returns a queue; it starts nothing.
func NewEventQueue(opts QueueOptions) (*EventQueue, error) {
	if opts.Store == nil {
		return nil, errors.New("event queue: a store is required")
	}
	if opts.Buffer <= 0 {
		opts.Buffer = DefaultEventBuffer
	}
	if opts.AckWait <= 0 {
		opts.AckWait = DefaultEventAckWait
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 2 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	q := &EventQueue{opts: opts, log: opts.Logger, rooms: map[string]*roomQueue{}}
	q.ctx, q.abort = context.WithCancel(context.Background())
	q.healthy.Store(true)
	q.queued = prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_events_queued", Help: "Events waiting to be written to the event log."})
	q.stored = prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_events_written_total", Help: "Events the queue wrote to the event log."})
	q.dropped = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_events_dropped_total",
		Help: "Events lost before the event log stored them: the queue was full, or shutdown ended before the log came back."}, []string{"reason"})
	q.retries = prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_events_write_retries_total", Help: "Failed writes to the event log, retried."})
	q.unsettled = prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_events_unsettled_acks_total",
		Help: "Changes acknowledged before the event log stored their events, because it was slow or failing."})
	return q, nil
}

// Collectors returns the queue's metrics for a Prometheus registry.
func (q *EventQueue) Collectors() []prometheus.Collector {
	return []prometheus.Collector{q.queued, q.stored, q.dropped, q.retries, q.unsettled}
}

// Emit stamps a copy of ev and queues it behind the earlier events of its room. It never waits
// for the store; with the buffer full the event is dropped, counted and logged.
func (q *EventQueue) Emit(ev *Event) {
	cp := *ev
	Stamp(&cp, q.opts.Clock())
	key := cp.RoomName()
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		q.dropped.WithLabelValues("shutdown").Inc()
		q.log.Error("EVENT LOST: emitted after the event queue closed", "type", cp.Type, "id", cp.ID, "room", key)
		return
	}
	if q.waiting >= q.opts.Buffer {
		first := !q.full
		q.full = true
		q.lostRun++
		q.mu.Unlock()
		q.dropped.WithLabelValues("buffer_full").Inc()
		if first {
			q.log.Error("EVENTS DROPPED: the event queue is full; new events are lost until the event log catches up",
				"buffer", q.opts.Buffer, "type", cp.Type, "room", key)
		}
		return
	}
	if q.full {
		q.log.Error("event queue accepts events again", "lost", q.lostRun)
		q.full, q.lostRun = false, 0
	}
	rq := q.rooms[key]
	start := rq == nil
	if start {
		rq = &roomQueue{changed: make(chan struct{})}
		q.rooms[key] = rq
		q.wg.Add(1)
	}
	rq.events = append(rq.events, &cp)
	rq.emitted++
	q.waiting++
	q.mu.Unlock()
	q.queued.Inc()
	if start {
		go q.drain(key, rq)
	}
}

// Settle waits until the events of room emitted so far are stored, for at most AckWait, and not
// at all while the store is known to be slow or failing.
func (q *EventQueue) Settle(room string) {
	q.mu.Lock()
	rq := q.rooms[room]
	if rq == nil {
		q.mu.Unlock()
		return
	}
	target := rq.emitted
	q.mu.Unlock()
	if !q.healthy.Load() {
		q.unsettled.Inc()
		return
	}
	timer := time.NewTimer(q.opts.AckWait)
	defer timer.Stop()
	for {
		q.mu.Lock()
		done, changed := rq.done, rq.changed
		q.mu.Unlock()
		if done >= target {
			return
		}
		select {
		case <-changed:
		case <-timer.C:
			q.healthy.Store(false)
			q.unsettled.Inc()
			return
		}
	}
}

// Close stops taking events and waits until the queued ones are written or ctx ends; then it
// aborts the writes still pending, counts and logs their events as lost, and returns
// ctx.Err(). Idempotent.
func (q *EventQueue) Close(ctx context.Context) error {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	defer q.abort()
	flushed := make(chan struct{})
	go func() { q.wg.Wait(); close(flushed) }()
	select {
	case <-flushed:
		return nil
	case <-ctx.Done():
	}
	q.abort()
	<-flushed
	return ctx.Err()
}

// drain writes rq's events in order until it is empty, then retires it. It owns the head event.
func (q *EventQueue) drain(key string, rq *roomQueue) {
	defer q.wg.Done()
	for {
		q.mu.Lock()
		if len(rq.events) == 0 {
			delete(q.rooms, key)
			q.mu.Unlock()
			return
		}
		ev := rq.events[0]
		q.mu.Unlock()

		n := 1
		if !q.write(ev) { // Close gave up: drop the room's remaining events too
			q.mu.Lock()
			n = len(rq.events)
			q.mu.Unlock()
			q.dropped.WithLabelValues("shutdown").Add(float64(n))
			q.log.Error("EVENTS LOST: shutdown ended before the event log stored them", "room", key, "events", n, "first_type", ev.Type, "first_id", ev.ID)
		}

		q.mu.Lock()
		clear(rq.events[:n])
		rq.events = rq.events[n:]
		rq.done += uint64(n)
		q.waiting -= n
		close(rq.changed)
		rq.changed = make(chan struct{})
		q.mu.Unlock()
		q.queued.Sub(float64(n))
	}
}

// write stores ev, retrying with backoff; false when Close gave up first.
func (q *EventQueue) write(ev *Event) bool {
	backoff := 20 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(q.ctx, q.opts.WriteTimeout)
		err := q.opts.Store.Write(ctx, ev)
		cancel()
		if err == nil {
			q.stored.Inc()
			q.healthy.Store(true)
			if q.failing.Swap(false) {
				q.log.Warn("event log stores events again")
			}
			q.log.Debug("event", "type", ev.Type, "seq", ev.Seq, "room", ev.RoomName(), "reason", ev.Reason)
			return true
		}
		q.healthy.Store(false)
		if q.ctx.Err() != nil {
			return false
		}
		q.retries.Inc()
		if !q.failing.Swap(true) {
			q.log.Error("event log is failing: events wait in memory and are retried in order", "err", err, "waiting", q.Len())
		}
		select {
		case <-time.After(backoff):
		case <-q.ctx.Done():
		}
		backoff = min(2*backoff, time.Second)
	}
}

// Len returns the number of events waiting for the store.
func (q *EventQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.waiting
}
