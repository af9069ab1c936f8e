package rtc

import (
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/sluice-media/sluice/sfu"
)

// A long stream keeps flowing: 200,000 source packets (three wraps of the 16-bit sequence,
// about 11 minutes of 300 packet/s video) all go out, numbered without a gap; a packet from
// before the current mapping is still refused.
func TestDownTrackLongStream(t *testing.T) {
	dt := NewDownTrack(sfu.Codec{Name: sfu.CodecH264, ClockRate: 90000}, "video", "s")
	w := &countingWriter{}
	dt.binding.Store(&binding{writer: w, ssrc: 1, pt: 106})
	p := &sfu.Packet{Payload: []byte{1, 2, 3}}
	const n = 200000
	start := uint16(60000)
	for i := range n {
		p.Header.SequenceNumber = start + uint16(i)
		p.Header.Timestamp = uint32(i / 10 * 3000)
		p.Arrival = int64(i) * int64(time.Millisecond)
		if err := dt.WritePacket(p, false); err != nil {
			t.Fatal(err)
		}
	}
	if w.n != n || w.gaps != 0 {
		t.Fatalf("%d of %d packets sent, %d sequence gaps", w.n, n, w.gaps)
	}
	// A late packet from before a source switch is dropped.
	dt.Switch()
	p.Header.SequenceNumber = 100
	_ = dt.WritePacket(p, false)
	p.Header.SequenceNumber = 99
	_ = dt.WritePacket(p, false)
	if w.n != n+1 {
		t.Fatalf("a packet from before the switch went out (%d sent)", w.n-n)
	}
}

// countingWriter is a pion TrackLocalWriter that checks the sequence it is given.
type countingWriter struct {
	n, gaps int
	last    uint16
}

func (w *countingWriter) WriteRTP(h *rtp.Header, _ []byte) (int, error) {
	if w.n > 0 && h.SequenceNumber != w.last+1 {
		w.gaps++
	}
	w.last = h.SequenceNumber
	w.n++
	return 0, nil
}

func (w *countingWriter) Write(b []byte) (int, error) { return len(b), nil }

// A packet is retransmitted at most maxResends times however often it is asked for; the packet
// that takes its history slot next has a count of its own.
func TestDownTrackResendCap(t *testing.T) {
	dt := NewDownTrack(sfu.Codec{Name: sfu.CodecH264, ClockRate: 90000}, "video", "s")
	w := &countingWriter{}
	dt.binding.Store(&binding{writer: w, ssrc: 1, pt: 106})
	p := &sfu.Packet{Payload: []byte{1}}
	var first uint16
	for i := range historySize + 1 {
		p.Header.SequenceNumber = uint16(i)
		if err := dt.WritePacket(p, false); err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			first = w.last // the output number of source packet 1
		}
	}
	for range 2 * maxResends {
		dt.Resend([]uint16{first + historySize - 1}) // the last packet, in slot 0 of the window
	}
	if got := dt.Resent(); got != maxResends {
		t.Fatalf("%d retransmissions of one packet, want %d", got, maxResends)
	}
	p.Header.SequenceNumber = historySize + 1
	_ = dt.WritePacket(p, false) // takes the slot of an older packet
	dt.Resend([]uint16{first + historySize})
	if got := dt.Resent(); got != maxResends+1 {
		t.Fatalf("the slot's new packet was not retransmitted (%d in all)", got)
	}
	dt.Resend([]uint16{first}) // overwritten long ago: nothing to send
	if got := dt.Resent(); got != maxResends+1 {
		t.Fatalf("a packet no longer in the history was retransmitted")
	}
}
