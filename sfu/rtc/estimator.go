package rtc

import (
	"log/slog"
	"time"

	"github.com/pion/rtcp"
	"github.com/sluice-media/sluice/sfu"
)

// Estimator guesses how many bits per second a viewer's link carries, to pick its simulcast
// layer. The viewers' connections bypass pion's interceptors (egress.go), so pion's send-side
// GCC (pkg/gcc), which paces and stamps every packet itself, cannot run there; what a viewer
// tells us anyway is used instead: the loss its receiver reports show (the loss-based half of
// GCC, draft-ietf-rmcat-gcc-02 §6) and, when the browser sends it, REMB (draft-alvestrand-rmcat-
// remb). A browser's REMB follows what it receives (its delay-based estimate never goes far
// above its incoming rate), so it is taken as a sign of congestion only, when it falls: it
// sees queues build up before they overflow. Without probing, the estimate grows on reports
// without
// loss; a layer that then proves too much for the link is given up and retried later, each
// time later (backoff), so that a narrow link is not made to freeze over and over.
//
// Owned by the goroutine reading the viewer's RTCP.
type Estimator struct {
	bps      float64
	remb     float64 // the last REMB, for the log
	lastAt   time.Time
	holdTill time.Time     // no step up before this
	backoff  time.Duration // the next hold after a failed step up
	upAt     time.Time     // when the last step up was made
	picked   int           // the last layer picked, for the log
	cur      int           // the layer the viewer was last seen on, and since when
	curSince time.Time
	// Log, when set, gets a debug line at each change of layer.
	Log *slog.Logger
}

// Estimator bounds, bits per second.
const (
	estStart = 300_000 // a new viewer starts low and climbs, as browsers' own estimates do
	estMin   = 50_000
	estMax   = 20_000_000
)

// NewEstimator returns an estimator starting at 1 Mbit/s.
func NewEstimator() *Estimator {
	return &Estimator{bps: estStart, backoff: 2 * time.Second, picked: -1}
}

// onNACK takes a viewer's NACK at now: the first sign of loss, a round trip before its
// receiver report. Loss soon after a step up means the new layer is too much for the link:
// the estimate falls back at once, and the next step up waits longer.
func (e *Estimator) onNACK(now time.Time) bool {
	if e.upAt.IsZero() || now.Sub(e.upAt) > 2*time.Second {
		return false
	}
	e.bps = max(e.bps/2, estMin)
	e.failedUp(now)
	return true
}

// failedUp holds step ups for the backoff, which doubles up to maxBackoff.
func (e *Estimator) failedUp(now time.Time) {
	e.holdTill = now.Add(e.backoff)
	e.backoff = min(e.backoff*2, maxBackoff)
	e.upAt = time.Time{}
}

// settleTime is how long a viewer stays on a layer before the next step up.
const settleTime = 2 * time.Second

// maxBackoff bounds the hold after failed step ups, so that a link that got wider is found
// within a few seconds.
const maxBackoff = 4 * time.Second

// onLoss takes a receiver report's fraction lost (of 256) at now, while sending sent bits per
// second; the estimate grows up to ceiling (what the best layer needs, with room).
func (e *Estimator) onLoss(fractionLost uint8, sent, ceiling float64, now time.Time) {
	loss := float64(fractionLost) / 256
	recentUp := !e.upAt.IsZero() && now.Sub(e.upAt) < 5*time.Second
	switch {
	case loss > 0.1 || (loss >= 0.02 && recentUp):
		// Heavy loss, or any soon after a step up (a layer that nearly fits the link loses a
		// little, and its queue grows until frames freeze): back below what is sent.
		e.bps = max(e.bps*(1-loss/2), estMin)
		if got := sent * (1 - loss); got > 0 {
			e.bps = max(min(e.bps, got*0.9), estMin)
		}
		if recentUp {
			e.failedUp(now)
		}
	case loss < 0.02:
		if dt := now.Sub(e.lastAt); dt > 0 && !e.lastAt.IsZero() {
			// +50% a second: from the low layer to the top one in about four seconds.
			e.bps = min(e.bps*(1+0.5*min(dt.Seconds(), 1)), max(ceiling, estStart), estMax)
		}
	}
	e.lastAt = now
}

// onREMB takes a REMB bitrate; it reports whether the estimate fell. A browser's REMB is its
// delay-based estimate, which stays near what it receives and drops below that when queues
// build up: so a REMB lower than the one before (by more than noise) soon after a step up
// means the new layer is too much, and the estimate falls to it; its level says nothing
// about room above what is sent.
func (e *Estimator) onREMB(bps float64, now time.Time) bool {
	prev := e.remb
	e.remb = bps
	if prev == 0 || bps >= 0.9*prev || bps >= e.bps {
		return false
	}
	if e.upAt.IsZero() || now.Sub(e.upAt) > 3*time.Second {
		return false // steady state: loss decides (a busy machine's jitter lowers REMB too)
	}
	e.bps = max(bps, estMin)
	e.failedUp(now)
	return true
}

// pick returns the highest layer of t whose measured bitrate fits the estimate, from cur (the
// layer now read): a step up waits for the hold after a failed one.
func (e *Estimator) pick(t *sfu.Track, cur int, now time.Time) int {
	budget := e.bps * 0.9
	active := t.ActiveLayers()
	best := 0
	need := 0.0 // a layer needs at least what the ones below it do (their rates are noisy)
	for l := range t.Layers() {
		need = max(need, t.LayerBitrate(l))
		if active&(1<<l) != 0 && need <= budget {
			best = l
		}
	}
	if cur != e.cur {
		e.cur, e.curSince = cur, now
	}
	if best > cur && cur >= 0 {
		// One step at a time: the layer reached must have held for a while (its loss and
		// REMB take a round of reports to show).
		if now.Before(e.holdTill) || now.Sub(e.curSince) < settleTime {
			return max(cur, min(best, e.picked))
		}
		e.upAt = now
	}
	if best <= cur && now.Sub(e.upAt) > 10*time.Second {
		e.backoff = 2 * time.Second // the link held: forget the failures
	}
	if best != e.picked && e.Log != nil {
		e.Log.Debug("simulcast layer", "layer", best, "from", cur, "estimate", int(e.bps), "remb", int(e.remb),
			"layer_bitrates", [3]int{int(t.LayerBitrate(0)), int(t.LayerBitrate(1)), int(t.LayerBitrate(2))}, "active", active)
	}
	e.picked = best
	return best
}

// Adapt moves sub to the layer the viewer's link carries, no higher than limit (what the viewer
// asked for; sfu.LayerHighest for no limit), from the viewer's receiver reports about this down
// track. Nothing to do for a track without simulcast. Called by the viewer's RTCP reader.
func (d *DownTrack) Adapt(sub *sfu.Subscription, e *Estimator, reports []rtcp.ReceptionReport, limit int) {
	t := sub.Track()
	b := d.binding.Load()
	if t.Layers() <= 1 || b == nil {
		return
	}
	for _, r := range reports {
		if r.SSRC != b.ssrc {
			continue
		}
		now := time.Now()
		var top float64
		for l := range t.Layers() {
			top = max(top, t.LayerBitrate(l))
		}
		e.onLoss(r.FractionLost, t.LayerBitrate(sub.Layer()), 1.5*top, now)
		sub.SetMaxLayer(min(e.pick(t, sub.Layer(), now), limit))
		return
	}
}

// AdaptREMB is Adapt for a REMB of the viewer (bits per second).
func (d *DownTrack) AdaptREMB(sub *sfu.Subscription, e *Estimator, bps float64, limit int) {
	t := sub.Track()
	if t.Layers() <= 1 || d.binding.Load() == nil {
		return
	}
	if now := time.Now(); e.onREMB(bps, now) {
		sub.SetMaxLayer(min(e.pick(t, sub.Layer(), now), limit))
	}
}

// AdaptNACK is Adapt for a NACK of the viewer: a step up that causes loss is undone at once.
func (d *DownTrack) AdaptNACK(sub *sfu.Subscription, e *Estimator, limit int) {
	t := sub.Track()
	if t.Layers() <= 1 || d.binding.Load() == nil {
		return
	}
	if now := time.Now(); e.onNACK(now) {
		sub.SetMaxLayer(min(e.pick(t, sub.Layer(), now), limit))
	}
}
