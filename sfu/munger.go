package sfu

import (
	"math/rand/v2"
	"time"

	"github.com/pion/rtp"
)

// Munger rewrites the sequence numbers and timestamps of what one reader sends, so that they
// run on without jumps across SFU drops and the switches of a Follower (RFC 3550 §5.1 lets a
// sender start anywhere, never go back). The writing goroutine owns it (the subscription's);
// Switch is called between two subscriptions (Leg.Switched), never during Rewrite.
type Munger struct {
	ClockRate uint32

	started bool
	resync  bool
	seqOff  uint16
	tsOff   uint32
	lastSeq uint16
	lastTS  uint32
	lastAt  time.Time
	anchor  uint16 // first source seq of the current mapping; older packets are dropped
}

// anchorTrail is how far the anchor follows behind the newest source sequence number: 16-bit
// "before" only means something within half the number space, and a fixed anchor would make
// every packet 32,768 after it look late.
const anchorTrail = 1 << 14

// Switch announces that the next packet comes from another track: the numbering continues from
// the last one sent, and the clock advances by the wall time elapsed. Before the first packet it
// does nothing.
func (m *Munger) Switch() { m.resync = m.started }

// Rewrite maps h, a copy of a packet's header that arrived at now (gap: the SFU skipped packets
// before it) to the reader's numbering. It returns false for a late packet from before the
// current mapping, which would reuse a number: the reader drops it.
func (m *Munger) Rewrite(h *rtp.Header, gap bool, now time.Time) bool {
	first := !m.started
	switch {
	case first:
		// RFC 3550 §5.1 wants unpredictable starting values, not secret ones.
		m.seqOff = uint16(rand.Uint32()) - h.SequenceNumber //nolint:gosec // see above
		m.tsOff = rand.Uint32() - h.Timestamp               //nolint:gosec // see above
		m.anchor, m.started = h.SequenceNumber, true
	case m.resync:
		m.resync = false
		elapsed := uint32(max(now.Sub(m.lastAt), time.Millisecond).Seconds() * float64(m.ClockRate))
		m.seqOff = m.lastSeq + 1 - h.SequenceNumber
		m.tsOff = m.lastTS + elapsed - h.Timestamp
		m.anchor = h.SequenceNumber
	case gap: // close the sequence gap; timestamps are real
		m.seqOff = m.lastSeq + 1 - h.SequenceNumber
		m.anchor = h.SequenceNumber
	case int16(h.SequenceNumber-m.anchor) < 0:
		return false
	}
	if int16(h.SequenceNumber-m.anchor) > anchorTrail {
		m.anchor = h.SequenceNumber - anchorTrail
	}
	h.SequenceNumber += m.seqOff
	h.Timestamp += m.tsOff
	if first || int16(h.SequenceNumber-m.lastSeq) > 0 {
		m.lastSeq, m.lastTS, m.lastAt = h.SequenceNumber, h.Timestamp, now
	}
	return true
}
