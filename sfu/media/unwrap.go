package media

import "github.com/pion/rtp"

// Unwrapper extends the 32-bit RTP timestamps of one track (RFC 3550 §5.1) to int64: the first
// timestamp keeps its value, each next one moves by its signed 32-bit difference to the last.
// The zero value is ready; it is owned by one goroutine.
type Unwrapper struct {
	started bool
	last    uint32
	ext     int64
}

// Unwrap returns the extended value of ts and makes it the reference of the next call.
func (u *Unwrapper) Unwrap(ts uint32) int64 {
	u.ext = u.At(ts)
	u.started, u.last = true, ts
	return u.ext
}

// At returns the extended value of ts near the last timestamp, without moving the reference.
func (u *Unwrapper) At(ts uint32) int64 {
	if !u.started {
		return int64(ts)
	}
	return u.ext + int64(int32(ts-u.last))
}

// Started reports whether a timestamp was unwrapped.
func (u *Unwrapper) Started() bool { return u.started }

// Sequence follows the packets of one track for its Reader: it extends their timestamps (the
// embedded Unwrapper) and notices sequence numbers that skip, i.e. packets lost before the
// reader. The zero value is ready; it is owned by one goroutine.
type Sequence struct {
	Unwrapper
	seq   uint16
	seqOK bool
}

// Next extends h's timestamp and reports whether packets are missing before it.
func (s *Sequence) Next(h *rtp.Header) (ext int64, lost bool) {
	lost = s.seqOK && h.SequenceNumber != s.seq+1
	s.seq, s.seqOK = h.SequenceNumber, true
	return s.Unwrap(h.Timestamp), lost
}
