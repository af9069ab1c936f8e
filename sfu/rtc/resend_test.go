package rtc

import (
	"testing"
	"time"
)

// Each packet is retransmitted at most maxResends times; the count is forgotten after
// resendMemory, and a packet with another sequence number in the same slot has its own.
func TestResendFilter(t *testing.T) {
	var f resendFilter
	at := time.Unix(1000, 0)
	cases := []struct {
		name  string
		after time.Duration
		in    []uint16
		want  []uint16
	}{
		{"first request", 0, []uint16{10, 11, 12}, []uint16{10, 11, 12}},
		{"second", 100 * time.Millisecond, []uint16{10, 11}, []uint16{10, 11}},
		{"third", 100 * time.Millisecond, []uint16{10, 12}, []uint16{10, 12}},
		{"fourth: 10 was sent 3 times", 100 * time.Millisecond, []uint16{10, 11, 13}, []uint16{11, 13}},
		{"same slot, other packet", 100 * time.Millisecond, []uint16{10 + historySize}, []uint16{10 + historySize}},
		{"12 again: its third and last", 100 * time.Millisecond, []uint16{12, 12}, []uint16{12}},
		{"forgotten after a second", 1100 * time.Millisecond, []uint16{11, 12}, []uint16{11, 12}},
	}
	for _, c := range cases {
		at = at.Add(c.after)
		got := f.filter(append([]uint16(nil), c.in...), at)
		if len(got) != len(c.want) {
			t.Fatalf("%s: got %v, want %v", c.name, got, c.want)
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Fatalf("%s: got %v, want %v", c.name, got, c.want)
			}
		}
	}
}
