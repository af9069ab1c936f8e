package transcode

import "sync/atomic"

// Timestamps through ffmpeg. The source's RTP timestamps are unwrapped and written to ffmpeg as
// 90 kHz presentation times, starting at tsOrigin; ffmpeg runs with -copyts, so every output
// packet carries the presentation time of the source instant it renders. Mapping it back gives
// the derived track timestamps on the source's clock (scaled to the output's rate), so that it
// stays in sync with the source's other tracks for WebRTC viewers, recordings and broadcasts,
// across restarts of ffmpeg too.

// tsOrigin is the presentation time of the source's first packet: far enough from zero that
// an encoder's priming (output slightly before the first input) stays positive.
const tsOrigin = 10 * 90000

// ptsMask keeps the 33 bits of an MPEG-TS presentation time (ISO 13818-1 §2.4.3.7).
const ptsMask = 1<<33 - 1

// timeline maps one conversion's timestamps. in is called by the feeder only; out and
// outSenderReport by the output reader, which runs after the feeder wrote something.
type timeline struct {
	srcRate int64
	outRate int64

	// Feeder state.
	started bool
	last    uint32
	ext     int64 // source ticks since base

	base   atomic.Int64 // the source's first RTP timestamp; -1 before it
	lastIn atomic.Int64 // unwrapped 90 kHz time of the last input
}

func newTimeline(srcRate, outRate uint32) *timeline {
	tl := &timeline{srcRate: int64(srcRate), outRate: int64(outRate)}
	tl.base.Store(-1)
	return tl
}

// in returns the 90 kHz presentation time of a source RTP timestamp (unwrapped, from tsOrigin).
func (tl *timeline) in(ts uint32) int64 {
	if !tl.started {
		tl.started, tl.last = true, ts
		tl.base.Store(int64(ts))
	} else {
		tl.ext += int64(int32(ts - tl.last))
		tl.last = ts
	}
	pts := tsOrigin + floorDiv(tl.ext*90000, tl.srcRate)
	tl.lastIn.Store(pts)
	return pts
}

// unwrap returns the full 90 kHz time of a 33-bit presentation time read from ffmpeg, taken
// as the one nearest to the last input (the output trails the input by well under 13 hours).
func (tl *timeline) unwrap(pts33 int64) int64 {
	last := tl.lastIn.Load()
	d := (pts33 - last) & ptsMask
	if d >= 1<<32 {
		d -= 1 << 33
	}
	return last + d
}

// out returns the derived track's RTP timestamp of an unwrapped 90 kHz output time: the
// source's timestamp of the same instant, scaled to the output rate.
func (tl *timeline) out(pts int64) uint32 {
	return uint32(tl.scaledBase() + floorDiv((pts-tsOrigin)*tl.outRate, 90000))
}

// outOfSource returns the derived track's RTP timestamp of a source RTP timestamp.
func (tl *timeline) outOfSource(ts uint32) uint32 {
	base := tl.base.Load()
	return uint32(tl.scaledBase() + floorDiv(int64(int32(ts-uint32(base)))*tl.outRate, tl.srcRate))
}

func (tl *timeline) scaledBase() int64 {
	return floorDiv(tl.base.Load()*tl.outRate, tl.srcRate)
}

// floorDiv divides rounding towards minus infinity, so that times before the origin map
// consistently.
func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}
