package sfu

import (
	"sync/atomic"
	"time"
)

// Connection quality levels of participant.quality (shared/EVENTS.md: SparkRTC's
// network-quality scale).
const (
	QualityUnknown   = 0
	QualityExcellent = 1
	QualityGood      = 2
	QualityPoor      = 3
	QualityBad       = 4
	QualityVeryBad   = 5
	QualityDown      = 6
)

// Quality evaluation: every QualityInterval the hub reads the RTCP figures of each WebRTC
// stream (ProtocolStats with PacketsExpected) and rates the loss over the last qualityWindow
// intervals, the jitter and the round trip. Publish streams make a participant's uplink, play
// streams its downlink.
const (
	QualityInterval = time.Second
	qualityWindow   = 5
	// qualityHold is how many evaluations in a row must agree on a new level before it is
	// reported; with the threshold margin below it keeps a level from flapping.
	qualityHold = 2
	// qualityMargin scales the thresholds a figure must fall under to rate a level better than
	// the current one.
	qualityMargin = 0.7
	// qualityDownAfter rates a link down when no report about it came for this long.
	qualityDownAfter = 5 * time.Second
)

// Thresholds between the levels 1-5: a figure at or above thresholds[i] rates level i+2 or
// worse.
var (
	lossThresholds   = [4]float64{1, 3, 6, 12}        // percent of the packets
	jitterThresholds = [4]float64{30, 60, 100, 150}   // ms
	rttThresholds    = [4]float64{250, 400, 600, 900} // ms
)

// linkFigures are one direction's figures over the window.
type linkFigures struct {
	known                    bool
	down                     bool
	lossPct, jitterMs, rttMs float64
}

// worst combines two streams' figures of the same direction.
func (f linkFigures) worst(g linkFigures) linkFigures {
	if !f.known {
		return g
	}
	if !g.known {
		return f
	}
	return linkFigures{known: true, down: f.down || g.down, lossPct: max(f.lossPct, g.lossPct),
		jitterMs: max(f.jitterMs, g.jitterMs), rttMs: max(f.rttMs, g.rttMs)}
}

// rate returns the level of f with the thresholds scaled by scale.
func (f linkFigures) rate(scale float64) int {
	if !f.known {
		return QualityUnknown
	}
	if f.down {
		return QualityDown
	}
	level := QualityExcellent
	for i := range lossThresholds {
		if f.lossPct >= lossThresholds[i]*scale || f.jitterMs >= jitterThresholds[i]*scale || f.rttMs >= rttThresholds[i]*scale {
			level = i + 2
		}
	}
	return level
}

// linkLevel is one direction's reported level with its hysteresis state.
type linkLevel struct {
	level, candidate, held int
}

// update rates f and returns whether the reported level changed: a worse level needs the
// figures over its threshold, a better one under its threshold scaled by qualityMargin, and
// either qualityHold evaluations in a row.
func (l *linkLevel) update(f linkFigures) bool {
	next := l.level
	switch worse, better := f.rate(1), f.rate(qualityMargin); {
	case !f.known:
		next = QualityUnknown
	case l.level == QualityUnknown:
		next = worse // the first figures are taken as they are
		l.held = qualityHold
		l.candidate = next
	case worse > l.level:
		next = worse
	case better < l.level:
		next = better
	}
	if next == l.level {
		l.candidate, l.held = next, 0
		return false
	}
	if next != l.candidate {
		l.candidate, l.held = next, 0
	}
	l.held++
	if l.held < qualityHold && next != QualityUnknown {
		return false
	}
	l.level, l.held = next, 0
	return true
}

// streamWindow keeps a stream's cumulative report figures over the last evaluations.
type streamWindow struct {
	expected, lost [qualityWindow + 1]int64
	n              int // samples taken
}

// figures adds ps to the window and returns the link's figures over it.
func (w *streamWindow) figures(ps ProtocolStats, now time.Time) linkFigures {
	if ps.PacketsExpected == nil || ps.PacketsLost == nil {
		return linkFigures{}
	}
	i := w.n % len(w.expected)
	w.expected[i], w.lost[i] = *ps.PacketsExpected, *ps.PacketsLost
	oldest := 0
	if w.n >= qualityWindow {
		oldest = (w.n - qualityWindow) % len(w.expected)
	}
	w.n++
	f := linkFigures{known: true}
	if d := w.expected[i] - w.expected[oldest]; d > 0 {
		f.lossPct = 100 * float64(min(max(w.lost[i]-w.lost[oldest], 0), d)) / float64(d)
	}
	if ps.JitterMs != nil {
		f.jitterMs = *ps.JitterMs
	}
	if ps.RTTMs != nil {
		f.rttMs = *ps.RTTMs
	}
	f.down = !ps.ReportedAt.IsZero() && now.Sub(ps.ReportedAt) >= qualityDownAfter
	return f
}

// participantQuality is a participant's quality state, owned by the hub's quality
// evaluation; the reported levels are mirrored for readers.
type participantQuality struct {
	up, down         linkLevel
	uplink, downlink atomic.Int32
}

// Quality returns the participant's uplink and downlink levels as last reported by
// participant.quality (QualityUnknown … QualityDown).
func (p *Participant) Quality() (uplink, downlink int) {
	return int(p.quality.uplink.Load()), int(p.quality.downlink.Load())
}

// QualityChanged returns a channel closed at the room's next participant.quality.
func (r *Room) QualityChanged() <-chan struct{} { return r.qualityChanged.wait() }

// evalQuality rates every participant's links and emits participant.quality where a level
// changed. It calls the protocols' Stats, so it runs on a goroutine of its own.
func (h *Hub) evalQuality(now time.Time) {
	for _, r := range h.Rooms() {
		changed := false
		for _, p := range r.Participants() {
			var up, down linkFigures
			for _, s := range p.Streams() {
				if s.spec.Stats == nil || s.ended.Load() {
					continue
				}
				f := s.window.figures(s.spec.Stats(), now)
				if s.spec.Direction == DirectionPublish {
					up = up.worst(f)
				} else {
					down = down.worst(f)
				}
			}
			q := &p.quality
			// Both are updated: each keeps its own hysteresis.
			upChanged := q.up.update(up)
			downChanged := q.down.update(down)
			if !upChanged && !downChanged {
				continue
			}
			uplink, downlink := q.up.level, q.down.level
			err := p.op(func() error {
				q.uplink.Store(int32(uplink))     //nolint:gosec // 0-6
				q.downlink.Store(int32(downlink)) //nolint:gosec // 0-6
				if uplink == QualityUnknown && downlink == QualityUnknown {
					return nil // links that went away: participant.left tells
				}
				h.emit.Emit(&Event{Type: EventParticipantQuality, Room: r.Info(), Participant: p.Info(),
					Uplink: &uplink, Downlink: &downlink})
				return nil
			})
			changed = changed || err == nil
		}
		if changed {
			r.qualityChanged.fire()
		}
	}
}
