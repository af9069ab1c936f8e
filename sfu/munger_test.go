package sfu

import (
	"testing"
	"time"

	"github.com/pion/rtp"
)

// A munger's numbering runs on across drops and switches, and never goes back.
func TestMunger(t *testing.T) {
	type pkt struct {
		seq      uint16
		ts       uint32
		gap      bool
		switched bool
		after    time.Duration // since the previous packet
		// what comes out, relative to the first packet's output
		seq0    uint16
		ts0     uint32
		dropped bool
	}
	cases := []struct {
		name string
		pkts []pkt
	}{
		{"in order", []pkt{{seq: 10, ts: 1000}, {seq: 11, ts: 4000, seq0: 1, ts0: 3000}}},
		{"an SFU drop closes the sequence gap, not the time", []pkt{{seq: 10, ts: 1000}, {seq: 20, ts: 31000, gap: true, seq0: 1, ts0: 30000}}},
		{"a network loss keeps its gap", []pkt{{seq: 10, ts: 1000}, {seq: 12, ts: 7000, seq0: 2, ts0: 6000}}},
		{"a switch continues from the last packet, the clock from the wall time", []pkt{
			{seq: 10, ts: 1000},
			{seq: 60000, ts: 5, switched: true, after: time.Second, seq0: 1, ts0: 90000},
			{seq: 60001, ts: 3005, seq0: 2, ts0: 93000},
		}},
		{"a late packet from before a switch is dropped", []pkt{
			{seq: 10, ts: 1000},
			{seq: 100, ts: 1000, switched: true, after: time.Millisecond, seq0: 1, ts0: 90},
			{seq: 99, ts: 1000, dropped: true},
		}},
		{"a switch before anything was sent starts afresh", []pkt{{seq: 10, ts: 1000, switched: true}, {seq: 11, ts: 4000, seq0: 1, ts0: 3000}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := Munger{ClockRate: 90000}
			now := time.Unix(1000, 0)
			var first rtp.Header
			for i, p := range c.pkts {
				now = now.Add(p.after)
				if p.switched {
					m.Switch()
				}
				h := rtp.Header{SequenceNumber: p.seq, Timestamp: p.ts}
				if ok := m.Rewrite(&h, p.gap, now); ok == p.dropped {
					t.Fatalf("packet %d: kept %v", i, ok)
				}
				switch {
				case i == 0:
					first = h
				case !p.dropped && (h.SequenceNumber-first.SequenceNumber != p.seq0 || h.Timestamp-first.Timestamp != p.ts0):
					t.Fatalf("packet %d: +%d +%d, want +%d +%d", i, h.SequenceNumber-first.SequenceNumber, h.Timestamp-first.Timestamp, p.seq0, p.ts0)
				}
			}
		})
	}
}
