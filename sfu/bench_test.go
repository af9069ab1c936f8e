package sfu

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/pion/rtp"
)

type countSink struct{ total *atomic.Uint64 }

func (c countSink) WritePacket(*Packet, bool) error {
	c.total.Add(1)
	return nil
}

// BenchmarkFanout measures one track's packets delivered to N sinks: the producer's fan-out plus
// each subscription's dequeue and sink call. ns/pkt/sink is the cost of one delivery; allocs/op
// counts allocations per packet over all sinks (the packets themselves are built beforehand, as
// the publisher's read loop would).
func BenchmarkFanout(b *testing.B) {
	for _, sinks := range []int{1, 10, 100, 1000} {
		b.Run(fmt.Sprintf("sinks=%d", sinks), func(b *testing.B) {
			h, _ := NewHub(Options{Config: DefaultConfig()})
			defer h.Close()
			pub, _ := h.Join("bench", ParticipantSpec{Identity: "pub"})
			track, _ := pub.Publish(TrackSpec{Codec: testOpus})
			var total atomic.Uint64
			for range sinks {
				if _, err := track.Subscribe(countSink{&total}, SubscribeOptions{QueueSize: 1024}); err != nil {
					b.Fatal(err)
				}
			}
			const batch = 256
			pkts := make([]*Packet, batch)
			for i := range pkts {
				pkts[i] = &Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(i)}, Payload: make([]byte, 1100)}
			}
			b.ReportAllocs()
			b.ResetTimer()
			var want uint64
			for i := 0; i < b.N; i += batch {
				n := min(batch, b.N-i)
				for _, p := range pkts[:n] {
					track.WritePacket(p)
				}
				want += uint64(n * sinks)
				for total.Load() < want {
					runtime.Gosched()
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(sinks), "ns/pkt/sink")
		})
	}
}
