package media

import (
	"testing"

	"github.com/pion/rtp"
)

// TestSequence: timestamps extend across the 32-bit wrap in both directions, and a skipped
// sequence number (also across the 16-bit wrap) is a loss.
func TestSequence(t *testing.T) {
	var s Sequence
	for i, c := range []struct {
		seq     uint16
		ts      uint32
		ext     int64
		lost    bool
		comment string
	}{
		{65534, 0xffffff00, 0xffffff00, false, "first packet"},
		{65535, 0xffffffff, 0xffffffff, false, ""},
		{0, 0x100, 0x100000100, false, "both wrap"},
		{2, 0x200, 0x100000200, true, "one packet lost"},
		{3, 0x150, 0x100000150, false, "an earlier timestamp (B-frame order)"},
		{3, 0x150, 0x100000150, true, "a duplicate is not the next packet"},
	} {
		ext, lost := s.Next(&rtp.Header{SequenceNumber: c.seq, Timestamp: c.ts})
		if ext != c.ext || lost != c.lost {
			t.Errorf("%d (%s): ext %#x lost %v, want %#x %v", i, c.comment, ext, lost, c.ext, c.lost)
		}
	}
}
