package rtc

import "time"

// maxResends is how many times one packet is retransmitted to a viewer at most: a viewer that
// keeps asking (pion asks every 100 ms until the packet arrives or leaves its window) does not
// make the daemon send it over and over when it is lost for good (as livekit's sequencer does).
const maxResends = 3

// resendMemory is how long a retransmitted packet's count is kept; an older entry with the same
// sequence number is a different packet (the numbers wrap every 65,536 packets).
const resendMemory = time.Second

// resendFilter picks which of the packets a viewer reported lost (RTCP generic NACK) are sent
// again. It belongs to one down track's RTCP goroutine: no lock.
type resendFilter struct {
	marks [historySize]resendMark // by sequence number modulo historySize, like the history
}

type resendMark struct {
	at  int64 // unix nanoseconds of the last retransmission
	seq uint16
	n   uint8
}

// filter keeps, in place, the sequence numbers that were retransmitted fewer than maxResends
// times, and counts them as retransmitted at now.
func (f *resendFilter) filter(seqs []uint16, now time.Time) []uint16 {
	t := now.UnixNano()
	out := seqs[:0]
	for _, seq := range seqs {
		m := &f.marks[seq%historySize]
		if m.n == 0 || m.seq != seq || t-m.at > int64(resendMemory) {
			*m = resendMark{seq: seq}
		}
		if m.n >= maxResends {
			continue
		}
		m.n++
		m.at = t
		out = append(out, seq)
	}
	return out
}
