package rtc

import (
	"time"

	"github.com/pion/rtcp"
	"github.com/sluice-media/sluice/sfu"
)

// Estimator guesses how many bits per second a viewer's link carries, to pick its simulcast
// layer. The viewers' connections bypass pion's interceptors (egress.go), so pion's send-side
// GCC (pkg/gcc), which paces and stamps every packet itself, cannot run there; what a viewer
// tells us anyway is used instead: the loss its receiver reports show (the loss-based half of
// GCC, draft-ietf-rmcat-gcc-02 §6) and, when the browser sends it, REMB (draft-alvestrand-rmcat-
// remb), which bounds the estimate. Without probing, the estimate grows on reports without
// loss; a layer that then proves too much for the link is given up and retried later, each
// time later (backoff), so that a narrow link is not made to freeze over and over.
//
// Owned by the goroutine reading the viewer's RTCP.
type Estimator struct {
	bps      float64
	remb     float64
	rembAt   time.Time
	lastAt   time.Time
	holdTill time.Time     // no step up before this
	backoff  time.Duration // the next hold after a failed step up
	upAt     time.Time     // when the last step up was made
}

// Estimator bounds, bits per second.
const (
	estStart = 1_000_000
	estMin   = 50_000
	estMax   = 20_000_000
)

// NewEstimator returns an estimator starting at 1 Mbit/s.
func NewEstimator() *Estimator { return &Estimator{bps: estStart, backoff: 2 * time.Second} }

// onLoss takes a receiver report's fraction lost (of 256) at now, while sending sent bits per
// second; the estimate grows up to ceiling (what the best layer needs, with room).
func (e *Estimator) onLoss(fractionLost uint8, sent, ceiling float64, now time.Time) {
	loss := float64(fractionLost) / 256
	switch {
	case loss > 0.1:
		e.bps = max(e.bps*(1-loss/2), estMin)
		if got := sent * (1 - loss); got > 0 {
			e.bps = max(min(e.bps, got), estMin) // what came through is what the link carries
		}
		if now.Sub(e.upAt) < 3*time.Second { // the last step up did this: wait longer next time
			e.holdTill = now.Add(e.backoff)
			e.backoff = min(e.backoff*2, 30*time.Second)
		}
	case loss < 0.02:
		if dt := now.Sub(e.lastAt); dt > 0 && !e.lastAt.IsZero() {
			// +40% a second: from a low layer to the top one in a few seconds.
			e.bps = min(e.bps*(1+0.4*min(dt.Seconds(), 1)), max(ceiling, estStart), estMax)
		}
	}
	e.lastAt = now
}

// OnREMB takes a REMB bitrate.
func (e *Estimator) OnREMB(bps float64, now time.Time) { e.remb, e.rembAt = bps, now }

// estimate returns the estimate at now.
func (e *Estimator) estimate(now time.Time) float64 {
	if !e.rembAt.IsZero() && now.Sub(e.rembAt) < 3*time.Second {
		return min(e.bps, e.remb)
	}
	return e.bps
}

// pick returns the highest layer of t whose measured bitrate fits the estimate, from cur (the
// layer now read): a step up waits for the hold after a failed one.
func (e *Estimator) pick(t *sfu.Track, cur int, now time.Time) int {
	budget := e.estimate(now) * 0.9
	active := t.ActiveLayers()
	best := 0
	for l := range t.Layers() {
		if active&(1<<l) != 0 && t.LayerBitrate(l) <= budget {
			best = l
		}
	}
	if best > cur && cur >= 0 {
		if now.Before(e.holdTill) {
			return cur
		}
		e.upAt = now
	}
	if best <= cur && now.Sub(e.upAt) > 10*time.Second {
		e.backoff = 2 * time.Second // the link held: forget the failures
	}
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
