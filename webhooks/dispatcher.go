package webhooks

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// dispatcher delivers the log to one endpoint. Its reader admits each event into the lane of
// the event's room; each lane runs one goroutine while it has work, delivering in seq order.
// The saved position (cursor) is the floor below which every event is done: delivered, given
// up as failed, or not for this endpoint.
type dispatcher struct {
	d      *Deliverer
	ep     Endpoint
	signer *Signer
	ctx    context.Context
	cancel context.CancelFunc
	sem    chan struct{}
	log    *slog.Logger

	wg       sync.WaitGroup // the cursor saver
	lanesWG  sync.WaitGroup // lane goroutines
	doneOnce sync.Once
	doneCh   chan struct{}

	mu       sync.Mutex
	readPos  uint64 // every event <= readPos has been admitted or skipped
	lanes    map[string]*lane
	stopping bool // no lane starts any more
}

// lane is the queue of one room's events for one endpoint.
type lane struct {
	room    string
	queue   []item
	running bool
	// spillFrom > 0: this room's events from spillFrom on are not in queue but only in the log
	// (the lane was full); the lane reads them back once its queue is empty.
	spillFrom uint64
}

// inflightGrace is how long a stopping dispatcher waits for the answer of a request in flight.
const inflightGrace = 2 * time.Second

// item is one event to deliver.
type item struct {
	seq  uint64
	id   string
	typ  string
	room string
	time time.Time
	body []byte
}

func (p *dispatcher) done() chan struct{} {
	p.doneOnce.Do(func() { p.doneCh = make(chan struct{}) })
	return p.doneCh
}

// run reads the log from the saved cursor until the dispatcher's context ends, then waits for
// its lanes and saves the cursor.
func (p *dispatcher) run() {
	done := p.done()
	defer close(done)
	floor, err := p.startPosition()
	if err != nil {
		return // stopped before the log answered
	}
	p.readPos = floor
	p.wg.Add(1)
	go p.saveCursor(floor)
	for p.ctx.Err() == nil {
		p.mu.Lock()
		after := p.readPos
		p.mu.Unlock()
		err := p.d.events.Follow(p.ctx, Query{After: after}, func(r Record) error {
			p.admit(r)
			return nil
		})
		if err != nil && p.ctx.Err() == nil {
			p.log.Warn("webhooks: reading the log; retrying", "err", err)
			sleepCtx(p.ctx, time.Second)
		}
	}
	p.wg.Wait()
}

// startPosition reads the endpoint's saved position (a new endpoint starts with the events
// after now), retrying while the log is unreachable.
func (p *dispatcher) startPosition() (uint64, error) {
	for {
		floor, found, err := p.d.store.cursor(p.ctx, p.ep.ID)
		if err == nil && !found {
			if floor, err = p.d.events.LastSeq(p.ctx); err == nil {
				err = p.d.store.setCursor(p.ctx, p.ep.ID, floor)
			}
		}
		if err == nil {
			return floor, nil
		}
		p.log.Warn("webhooks: reading the endpoint's position; retrying", "err", err)
		if !sleepCtx(p.ctx, time.Second) {
			return 0, p.ctx.Err()
		}
	}
}

// sleepCtx waits d, or until ctx ends (false).
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// admit hands a record to its room's lane, or skips it.
func (p *dispatcher) admit(r Record) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r.Seq <= p.readPos {
		return // a re-read after a reconnect
	}
	p.readPos = r.Seq
	if !p.ep.Matches(r.Type, r.Room) {
		return
	}
	ln := p.lanes[r.Room]
	if ln == nil {
		ln = &lane{room: r.Room}
		p.lanes[r.Room] = ln
	}
	switch {
	case ln.spillFrom > 0:
		// the lane reads this one back from the log
	case len(ln.queue) >= p.d.opts.LaneLimit:
		ln.spillFrom = r.Seq
	default:
		ln.queue = append(ln.queue, p.itemOf(r))
	}
	if !ln.running && !p.stopping {
		ln.running = true
		p.lanesWG.Add(1)
		go p.runLane(ln)
	}
}

func (p *dispatcher) itemOf(r Record) item {
	return item{seq: r.Seq, id: r.ID, typ: r.Type, room: r.Room, time: r.Time, body: r.Body}
}

// runLane delivers a lane's events in order until it is empty or the dispatcher stops.
func (p *dispatcher) runLane(ln *lane) {
	defer p.lanesWG.Done()
	for {
		p.mu.Lock()
		if len(ln.queue) == 0 {
			if ln.spillFrom > 0 && p.ctx.Err() == nil {
				from, upto := ln.spillFrom, p.readPos
				p.mu.Unlock()
				if !p.refill(ln, from, upto) {
					sleepCtx(p.ctx, time.Second)
				}
				continue
			}
			ln.running = false
			if ln.spillFrom == 0 {
				delete(p.lanes, ln.room)
			}
			p.mu.Unlock()
			return
		}
		it := ln.queue[0]
		p.mu.Unlock()
		if !p.deliver(it) {
			p.mu.Lock()
			ln.running = false
			p.mu.Unlock()
			return
		}
		p.mu.Lock()
		ln.queue[0] = item{}
		ln.queue = ln.queue[1:]
		p.mu.Unlock()
	}
}

// refill reads back a spilled lane's events in [from, upto] from the log, up to LaneLimit;
// false when the log could not be read.
func (p *dispatcher) refill(ln *lane, from, upto uint64) bool {
	var got []item
	next, complete := from, true
	err := scanStream(p.ctx, p.d.events.js, streamEvents, roomSubject(ln.room), from-1, time.Time{}, false, func(m jetstream.Msg) error {
		r, err := recordOf(m)
		if err != nil {
			return err
		}
		if r.Seq > upto {
			return errStop
		}
		if !p.ep.Matches(r.Type, r.Room) {
			next = r.Seq + 1
			return nil
		}
		if len(got) >= p.d.opts.LaneLimit {
			complete = false
			return errStop
		}
		got = append(got, p.itemOf(r))
		next = r.Seq + 1
		return nil
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		if p.ctx.Err() == nil {
			p.log.Warn("webhooks: reading back a room's events", "room", ln.room, "err", err)
		}
		return false // spillFrom unchanged: retried by the lane's next turn (or after a restart)
	}
	ln.queue = append(ln.queue, got...)
	switch {
	case !complete:
		ln.spillFrom = next
	case p.readPos > upto:
		ln.spillFrom = upto + 1 // admitted meanwhile and skipped: read those too
	default:
		ln.spillFrom = 0
	}
	return true
}

// deliver tries one event until it is delivered or given up; false means the dispatcher is
// stopping (or the endpoint was disabled) and the event stays pending.
func (p *dispatcher) deliver(it item) bool {
	for attempt := 1; ; attempt++ {
		select {
		case p.sem <- struct{}{}:
		case <-p.ctx.Done():
			return false
		}
		// a stop lets a request in flight finish for a moment, so that a clean stop does not
		// leave a delivered event pending (and send it again at the next start)
		reqCtx, cancelReq := context.WithCancel(context.WithoutCancel(p.ctx))
		stop := context.AfterFunc(p.ctx, func() { time.AfterFunc(inflightGrace, cancelReq) })
		res := p.d.post(reqCtx, &p.ep, p.signer, it.id, it.body)
		stop()
		cancelReq()
		<-p.sem
		if !res.ok() && p.ctx.Err() != nil {
			return false // cut by the stop, not the endpoint's answer: stays pending
		}
		rec := Delivery{Endpoint: p.ep.ID, Seq: it.seq, EventID: it.id, Type: it.typ, Room: it.room, Attempts: attempt,
			StatusCode: res.code, Error: res.errText(), At: p.d.clock().UTC(), DurationMs: float64(res.duration.Microseconds()) / 1000}
		switch {
		case res.ok():
			rec.Status = StatusDelivered
			p.d.record(rec)
			return true
		case res.code == http.StatusGone:
			rec.Status = StatusGone
			p.d.record(rec)
			p.d.attempts.WithLabelValues(p.ep.ID, "gone").Inc()
			p.d.disable(context.WithoutCancel(p.ctx), p.ep.ID, "the endpoint answered 410 Gone")
			p.cancel()
			return false
		}
		wait := p.d.delay(attempt)
		if res.retryAfter > 0 {
			wait = res.retryAfter // the receiver said when: honour it, sooner or later
		}
		next := p.d.clock().Add(wait)
		if next.Sub(it.time) > p.d.cfg.MaxAge {
			rec.Status = StatusFailed
			p.d.record(rec)
			p.log.Warn("webhooks: giving up on an event after max_age", "seq", it.seq, "type", it.typ, "room", it.room, "attempts", attempt, "last_error", rec.Error)
			return true
		}
		rec.Status, rec.NextAt = StatusRetrying, &next
		p.d.record(rec)
		if attempt == 1 {
			p.log.Info("webhooks: delivery failed; retrying", "seq", it.seq, "type", it.typ, "room", it.room, "error", rec.Error, "next_in", wait)
		}
		if !sleepCtx(p.ctx, wait) {
			return false
		}
	}
}

// floor returns the highest seq at or below which every event is done.
func (p *dispatcher) floor() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.readPos
	for _, ln := range p.lanes {
		if len(ln.queue) > 0 && ln.queue[0].seq-1 < f {
			f = ln.queue[0].seq - 1
		}
		if ln.spillFrom > 0 && ln.spillFrom-1 < f {
			f = ln.spillFrom - 1
		}
	}
	return f
}

// saveCursor saves the floor every CursorInterval while it moves, and once more at the end.
func (p *dispatcher) saveCursor(saved uint64) {
	defer p.wg.Done()
	tick := time.NewTicker(p.d.opts.CursorInterval)
	defer tick.Stop()
	save := func(ctx context.Context) {
		if f := p.floor(); f != saved {
			if err := p.d.store.setCursor(ctx, p.ep.ID, f); err != nil {
				if ctx.Err() == nil {
					p.log.Warn("webhooks: saving the endpoint's position", "err", err)
				}
				return
			}
			saved = f
		}
	}
	for {
		select {
		case <-tick.C:
			save(p.ctx)
		case <-p.ctx.Done():
			// lanes stop at their next step; what they hold stays above the floor
			p.mu.Lock()
			p.stopping = true
			p.mu.Unlock()
			p.lanesWG.Wait()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			save(ctx)
			cancel()
			return
		}
	}
}
