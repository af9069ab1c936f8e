// Package broadcast pushes a room's stream to RTMP/RTMPS platforms (YouTube, Twitch, any RTMP
// ingest). A broadcast follows one participant of a room (the one named, or the room's main
// publisher), converts through the hub's transcoder what RTMP cannot carry (Opus, VP8, VP9),
// and publishes H.264 + AAC to each of its destinations, each with its own connection, its own
// subscriptions and its own state. Each destination is a worker run by egress.Supervise:
// refusals fail it at once, drops are retried with backoff for max_retry_duration.
package broadcast

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/sluice-media/sluice/egress/composite"
	"github.com/sluice-media/sluice/sfu"
)

// Broadcast states.
const (
	StatusStarting = "starting"
	StatusActive   = "active"
	StatusEnding   = "ending"
	StatusComplete = "complete"
	StatusFailed   = "failed"
)

// Broadcast is one room's stream pushed to its destinations. Its goroutine (run) owns the
// source binding, the destinations' lifecycle, the state and the events; the API reads the
// state through Info and changes it through Stop and Update, which hand their work to that
// goroutine.
type Broadcast struct {
	m        *Manager
	id       string
	room     string
	identity string // the requested source participant ("" follows the main publisher)
	epoch    time.Time
	log      *slog.Logger

	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	reports chan report
	cmds    chan func()
	first   chan error           // the outcome of the first source resolution
	comp    *composite.Composite // the room's program, for a broadcast with a layout
	release func()               // gives comp back

	// Owned by the goroutine.
	f       *sfu.Follower
	bind    *binding
	failure error // why the last source could not be bound
	grace   *time.Timer

	mu         sync.Mutex // guards what Info reads
	status     string
	source     string
	startedAt  *time.Time
	endedAt    *time.Time
	reconnects int
	errInfo    *sfu.ErrorInfo
	dests      []*destination
	stopReason string
}

// Info returns the broadcast object of events and the API; URL is the first destination's.
func (b *Broadcast) Info() *sfu.BroadcastInfo {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.infoLocked(nil)
}

func (b *Broadcast) infoLocked(about *destination) *sfu.BroadcastInfo {
	info := &sfu.BroadcastInfo{
		ID:          b.id,
		Room:        b.room,
		Participant: b.source,
		Status:      b.status,
		StartedAt:   b.startedAt,
		EndedAt:     b.endedAt,
		Reconnects:  b.reconnects,
		Error:       b.errInfo,
	}
	if info.Participant == "" {
		info.Participant = b.identity
	}
	if b.comp != nil {
		ci := b.comp.Info()
		info.Layout, info.Participants = ci.Layout, ci.Participants
	}
	for _, d := range b.dests {
		n := d.bytesSent()
		info.BytesSent += n
		info.Destinations = append(info.Destinations, sfu.BroadcastDestination{
			ID: d.id, URL: d.target.Redacted(), Status: d.status, BytesSent: n, Reconnects: d.reconnects, Error: d.errInfo,
		})
	}
	switch {
	case about != nil:
		info.URL = about.target.Redacted()
	case len(b.dests) > 0:
		info.URL = b.dests[0].target.Redacted()
	}
	return info
}

// Done is closed when the broadcast has ended and released everything.
func (b *Broadcast) Done() <-chan struct{} { return b.done }

// stop asks the broadcast to end with reason (broadcast.ended).
func (b *Broadcast) stop(reason string) {
	b.mu.Lock()
	if b.stopReason == "" {
		b.stopReason = reason
	}
	b.mu.Unlock()
	b.cancel()
}

// do runs fn on the broadcast's goroutine and waits for it; ErrFinished once it has ended.
func (b *Broadcast) do(fn func() error) error {
	res := make(chan error, 1)
	select {
	case b.cmds <- func() { res <- fn() }:
	case <-b.done:
		return ErrFinished
	}
	select {
	case err := <-res:
		return err
	case <-b.done:
		return ErrFinished
	}
}

// run is the broadcast's goroutine: it follows the source, starts the destinations, handles
// their reports and ends everything through finish.
func (b *Broadcast) run() {
	defer close(b.done)
	b.grace = time.NewTimer(b.m.cfg.Grace)
	defer b.grace.Stop()
	for _, d := range b.dests {
		d.start(b.ctx)
	}
	b.f = sfu.NewFollower(b.m.hub, sfu.FollowerSpec{Room: b.room, Select: sfu.Selector{Identity: b.identity},
		Legs: broadcastLegs, Settle: settleTime, OnChange: b.rebind})
	var program <-chan struct{} // the composite's layout, participants or restarts changed
	var shown composite.Info
	if b.comp != nil {
		program, shown = b.comp.Changed(), b.comp.Info()
	}
	for first := b.first; ; first = nil { // the outcome of the first resolution goes to Start
		changed := b.f.Changed()
		b.f.Update()
		if first != nil {
			first <- b.failure
		}
		if b.failure != nil {
			b.finish(StatusFailed, "", b.failure)
			return
		}
		select {
		case <-changed:
		case <-b.f.Recheck():
		case r := <-b.reports:
			if err := b.handle(r); err != nil {
				b.finish(StatusFailed, "", err)
				return
			}
		case fn := <-b.cmds:
			fn()
		case <-program:
			program = b.comp.Changed()
			now := b.comp.Info()
			reason := composite.ChangeReason(shown, now)
			shown = now
			b.mu.Lock()
			ev := &sfu.Event{Type: sfu.EventBroadcastUpdated, Reason: reason, Broadcast: b.infoLocked(nil)}
			b.mu.Unlock()
			b.m.emit(b, ev)
		case <-b.grace.C:
			if b.bind == nil {
				b.finish(StatusComplete, sfu.ReasonSourceEnded, nil)
				return
			}
		case <-b.ctx.Done():
			b.mu.Lock()
			reason := b.stopReason
			b.mu.Unlock()
			if reason == "" {
				reason = sfu.ReasonServerShutdown
			}
			b.finish(StatusComplete, reason, nil)
			return
		}
	}
}

// rebind binds the destinations to the follower's new tracks (the follower's OnChange): the
// named participant's, else the room's main publisher's. No source starts the grace period; a
// source that cannot be carried sets failure, which fails the broadcast.
func (b *Broadcast) rebind(problems []sfu.LegError) {
	var nb *binding
	if p := b.f.Source(); p != nil {
		var err error
		if nb, err = newBinding(p, b.f.Track(sfu.KindVideo), b.f.Track(sfu.KindAudio), problems); err != nil {
			b.failure = err
			return
		}
		for _, n := range nb.notes {
			b.log.Warn("broadcast source: " + n)
		}
	}
	b.mu.Lock()
	dests := append([]*destination(nil), b.dests...)
	b.mu.Unlock()
	for _, d := range dests {
		d.bind(nb)
	}
	b.bind = nb
	if nb == nil {
		b.log.Info("broadcast source left: waiting for it", "grace", b.m.cfg.Grace)
		b.resetGrace(b.m.cfg.Grace)
		return
	}
	b.mu.Lock()
	b.source = nb.participant.Identity() // kept after it leaves: the source this broadcast carried last
	b.mu.Unlock()
	b.log.Info("broadcast source", "participant", nb.participant.Identity(), "video", codecOf(nb.video), "audio", codecOf(nb.audio))
	b.grace.Stop()
}

func (b *Broadcast) resetGrace(d time.Duration) {
	if !b.grace.Stop() {
		select {
		case <-b.grace.C:
		default:
		}
	}
	b.grace.Reset(d)
}

func codecOf(t *sfu.Track) string {
	if t == nil {
		return ""
	}
	return t.Codec().Name
}

// handle applies a destination's report: its state, the broadcast's, and the one event of the
// change. The broadcast's own events stand for its output as a whole: broadcast.started when a
// destination comes up while none was active, broadcast.reconnecting when the last active one
// drops; a change while another destination goes on is broadcast.updated. A non-nil error is
// the broadcast failing (every destination has failed).
func (b *Broadcast) handle(r report) error {
	d := r.d
	now := b.m.now().UTC()
	b.mu.Lock()
	if !b.has(d) {
		b.mu.Unlock()
		return nil // removed meanwhile
	}
	othersActive := false
	for _, o := range b.dests {
		othersActive = othersActive || (o != d && o.status == destActive)
	}
	ev := &sfu.Event{Type: sfu.EventBroadcastUpdated}
	switch r.kind {
	case reportActive:
		d.status, d.errInfo = destActive, nil
		if b.status == StatusStarting {
			b.status, b.startedAt = StatusActive, &now
		}
		if !othersActive {
			ev.Type = sfu.EventBroadcastStarted
		}
	case reportReconnecting:
		d.status, d.errInfo = destReconnecting, b.errorInfo(d, r.err)
		d.reconnects++
		b.reconnects++
		ev.Error = d.errInfo
		if !othersActive {
			ev.Type = sfu.EventBroadcastReconnecting
		}
	case reportFailed:
		d.status, d.errInfo = destFailed, b.errorInfo(d, r.err)
		alive := 0
		for _, o := range b.dests {
			if o.status != destFailed {
				alive++
			}
		}
		if alive == 0 {
			b.mu.Unlock()
			return r.err // broadcast.failed
		}
		ev.Error = d.errInfo
		b.log.Warn("broadcast destination failed; the others go on", "destination", d.id, "url", d.target.Redacted(), "err", d.errInfo.Message)
	}
	ev.Broadcast = b.infoLocked(d)
	b.mu.Unlock()
	b.m.emit(b, ev)
	return nil
}

func (b *Broadcast) has(d *destination) bool {
	for _, o := range b.dests {
		if o == d {
			return true
		}
	}
	return false
}

// errorInfo is the error object of err, scrubbed of d's stream key.
func (b *Broadcast) errorInfo(d *destination, err error) *sfu.ErrorInfo {
	msg := err.Error()
	if d != nil {
		msg = d.target.Scrub(msg)
	}
	for _, o := range b.dests {
		msg = o.target.Scrub(msg)
	}
	return &sfu.ErrorInfo{Code: errorCode(err), Message: msg}
}

// finish ends the broadcast: destinations stop (the last tags go out), subscriptions end,
// transcoded tracks are released, then the one terminal event.
func (b *Broadcast) finish(status, reason string, err error) {
	b.mu.Lock()
	b.status = StatusEnding
	dests := append([]*destination(nil), b.dests...)
	b.mu.Unlock()
	for _, d := range dests {
		d.stop()
	}
	for _, d := range dests {
		b.await(d)
		d.bind(nil)
	}
	if b.f != nil {
		b.f.Close()
	}
	if b.release != nil {
		b.release()
	}
	b.bind = nil
	now := b.m.now().UTC()
	ev := &sfu.Event{Type: sfu.EventBroadcastEnded, Reason: reason}
	b.mu.Lock()
	b.status, b.endedAt = status, &now
	for _, d := range b.dests {
		if d.status != destFailed {
			d.status = destEnded
		}
	}
	if err != nil {
		var about *destination
		for _, d := range b.dests {
			if d.errInfo != nil {
				about = d
			}
		}
		b.errInfo = b.errorInfo(about, err)
		ev = &sfu.Event{Type: sfu.EventBroadcastFailed, Error: b.errInfo}
		ev.Broadcast = b.infoLocked(about)
	} else {
		ev.Broadcast = b.infoLocked(nil)
	}
	b.mu.Unlock()
	b.cancel()
	if err != nil {
		b.log.Warn("broadcast failed", "err", b.errInfo.Message)
	} else {
		b.log.Info("broadcast ended", "reason", reason)
	}
	b.m.emit(b, ev)
}

// await waits for a stopped destination's worker, dropping its last reports.
func (b *Broadcast) await(d *destination) {
	for {
		select {
		case <-d.done:
			return
		case <-b.reports:
		}
	}
}

// addURL adds a destination (on the goroutine).
func (b *Broadcast) addDestination(d *destination) {
	b.mu.Lock()
	b.dests = append(b.dests, d)
	b.mu.Unlock()
	d.start(b.ctx)
	d.bind(b.bind)
}

// removeDestination ends one destination (on the goroutine).
func (b *Broadcast) removeDestination(d *destination) {
	d.stop()
	b.await(d)
	d.bind(nil)
	b.mu.Lock()
	for i, o := range b.dests {
		if o == d {
			b.dests = append(b.dests[:i:i], b.dests[i+1:]...)
			break
		}
	}
	b.mu.Unlock()
	d.log.Info("broadcast destination removed")
}

// settleTime is how long a new source may take to publish its second track.
const settleTime = 2 * time.Second

var errLastDestination = errors.New("a broadcast keeps at least one destination: stop it instead")
