package rtsp

import (
	"math/rand/v2"
	"time"
)

// Backoff is the retry schedule of a camera pull: Initial after the first failure, doubling
// up to Max, each delay shortened at random by up to Jitter (a fraction) so that cameras that
// dropped together (a switch reboot) do not retry in lockstep. Values are immutable.
type Backoff struct {
	Initial time.Duration
	Max     time.Duration
	Jitter  float64
}

// DefaultBackoff is the schedule of the issue: 1 s, 2 s, 4 s, 8 s, 16 s, then every 30 s, each
// up to 20% shorter.
func DefaultBackoff() Backoff {
	return Backoff{Initial: time.Second, Max: 30 * time.Second, Jitter: 0.2}
}

// Delay returns the wait before retry number attempt (1 for the first retry). rnd returns a
// number in [0, 1); nil uses math/rand.
func (b Backoff) Delay(attempt int, rnd func() float64) time.Duration {
	if rnd == nil {
		rnd = rand.Float64
	}
	d := b.Initial
	for i := 1; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	return d - time.Duration(float64(d)*b.Jitter*rnd())
}
