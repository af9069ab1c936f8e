package media

import (
	"sync/atomic"
	"time"
)

// MaxClockSkew is how far a source's RTP clock may run ahead of the packets' arrival between
// two packets, or back, before Rebaser takes it for a jump of the source's clock. It is well
// above network jitter and a burst after a stall, far below the jumps broken cameras make (a
// clock set by NTP, a reboot of the encoder: minutes to hours).
const MaxClockSkew = 5 * time.Second

// Rebaser keeps the RTP timestamps of one track continuous when the source's clock jumps
// (RFC 3550 §5.1 timestamps only ever advance with the sampling clock): a timestamp that moves
// more than MaxClockSkew ahead of the time elapsed since the previous packet, or more than
// MaxClockSkew back, starts a new offset that places it one usual step (the source's last
// forward step) after the previous one, or the time elapsed since it when the jump came with a
// pause. Wrapping around 2^32 is not a jump. Reordered packets (a few tens of ms back) pass
// unchanged. Rebase is owned by the one goroutine that reads the track's packets; Offset may
// be read from any goroutine.
type Rebaser struct {
	clock     int64 // ticks per second
	started   bool
	lastIn    uint32
	lastOut   uint32
	lastAt    time.Time
	lastStep  int64 // the last forward step of the source's clock, in ticks
	offset    uint32
	offsetPub atomic.Uint32
}

// NewRebaser returns a Rebaser for a clock of rate Hz.
func NewRebaser(rate uint32) *Rebaser { return &Rebaser{clock: int64(max(rate, 1))} }

// Rebase returns the continuous timestamp of ts, which arrived at now, and by how much the
// source's clock jumped (0 when it did not).
func (r *Rebaser) Rebase(ts uint32, now time.Time) (out uint32, jump time.Duration) {
	if !r.started {
		r.started, r.lastIn, r.lastOut, r.lastAt = true, ts, ts, now
		return ts, 0
	}
	step := int64(int32(ts - r.lastIn)) // ticks
	elapsed := now.Sub(r.lastAt)
	elapsedTicks := int64(elapsed) * r.clock / int64(time.Second)
	skew := int64(MaxClockSkew) * r.clock / int64(time.Second)
	if step-elapsedTicks > skew || step < -skew {
		jump = time.Duration((step - elapsedTicks) * int64(time.Second) / r.clock)
		// Continue one usual step on, which keeps a steady source's frame grid exact; after a
		// pause, by the time elapsed.
		move := max(elapsedTicks, 1)
		if r.lastStep > 0 && elapsedTicks < 2*r.lastStep {
			move = r.lastStep
		}
		next := r.lastOut + uint32(move) //nolint:gosec // RTP time wraps by design
		r.offset = next - ts
		r.offsetPub.Store(r.offset)
	} else if step > 0 {
		r.lastStep = step
	}
	out = ts + r.offset
	r.lastIn, r.lastOut, r.lastAt = ts, out, now
	return out, jump
}

// Offset returns what Rebase adds to the source's timestamps now: a sender report's RTP time
// in the source's clock plus Offset is in the rebased clock.
func (r *Rebaser) Offset() uint32 { return r.offsetPub.Load() }
