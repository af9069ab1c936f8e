package rtmp

// RTMP timestamps are 32-bit milliseconds (RTMP spec §5.3.1.2) that wrap after 49.7 days and
// that encoders restart, rewind or interleave slightly out of order between audio and video.
// The tracks of a session share one continuous clock built from them: unwrapped, starting at
// 0 with the first message, and re-anchored where the input jumps, so that RTP timestamps
// (and the sender report that maps them to wall time) stay continuous and audio and video
// stay aligned.

const (
	// maxBackward and maxForward (ms) bound the step between two messages that is taken as
	// the input's own timing; beyond them the clock is re-anchored. Interleaving differences
	// are a few frames; read_timeout ends a session long before a real 30 s gap.
	maxBackward = 1000
	maxForward  = 30000
	// jumpStep (ms) is the step the clock takes over a re-anchored jump.
	jumpStep = 1
)

// sessionClock maps the RTMP timestamps of a session to continuous milliseconds. It is used
// by the connection goroutine only.
type sessionClock struct {
	started bool
	lastIn  uint32 // last input timestamp
	out     int64  // output of lastIn
	jumps   int    // re-anchored discontinuities, for the log
}

// at returns the continuous time in ms of an RTMP timestamp.
func (c *sessionClock) at(ts uint32) int64 {
	if !c.started {
		c.started, c.lastIn, c.out = true, ts, 0
		return 0
	}
	d := int64(int32(ts - c.lastIn)) // signed difference: crosses the 32-bit wrap
	c.lastIn = ts
	if d < -maxBackward || d > maxForward {
		d = jumpStep
		c.jumps++
	}
	c.out += d
	return c.out
}

// audioClock turns the session clock into sample-exact RTP timestamps for an audio track:
// millisecond timestamps are rounded, so a frame of 1024 samples at 48 kHz arrives 21 or 22 ms
// after the previous one. While the session clock agrees with the running sample count within
// a tolerance, the count is used; otherwise (a gap, a jump) it restarts from the clock.
type audioClock struct {
	rate      int64 // samples per second
	frame     int64 // samples per frame when fixed (AAC: 1024 or 960), 0 when unknown
	next      int64 // expected timestamp of the next frame
	haveNext  bool
	tolerance int64
}

func newAudioClock(rate, frame int) audioClock {
	return audioClock{rate: int64(rate), frame: int64(frame), tolerance: int64(rate) * 3 / 1000}
}

// at returns the RTP timestamp (in samples) of a frame at ms on the session clock.
func (a *audioClock) at(ms int64) int64 {
	ts := ms * a.rate / 1000
	if a.haveNext && a.frame > 0 {
		if d := ts - a.next; d >= -a.tolerance && d <= a.tolerance {
			ts = a.next
		}
	}
	a.next, a.haveNext = ts+a.frame, a.frame > 0
	return ts
}
