package media

import (
	"bytes"
	"testing"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media/mediatest"
)

// gopPackets is one second of H.264 at 30 fps as Writer packetizes it: a 20 kB IDR with its
// parameter sets, then 6 kB P slices.
func gopPackets(tb testing.TB) []*sfu.Packet { return mediatest.H264GOP(tb, sps, pps) }

// gopFeeder returns a function that pushes the GOP through r once more, its timestamps one
// second later each time; after warm rounds it allocates nothing of its own.
func gopFeeder(tb testing.TB, r Reader, emit func(*Frame)) func() {
	pkts := gopPackets(tb)
	var u Unwrapper
	round := uint32(0)
	qs := make([]sfu.Packet, len(pkts))
	feed := func() {
		for i, p := range pkts {
			qs[i] = *p
			qs[i].Header.Timestamp += round * 90000
			r.Push(&qs[i], u.Unwrap(qs[i].Header.Timestamp), false, emit)
		}
		round++
	}
	for range 20 { // the held buffers settle on their sizes
		feed()
	}
	return feed
}

// benchReader pushes GOPs through an H.264 reader; keep is what each frame costs beyond it.
func benchReader(b *testing.B, keep func(*Frame)) {
	r, _ := NewReader(H264Codec(sps, pps, 96))
	frames := 0
	feed := gopFeeder(b, r, func(f *Frame) { frames++; keep(f) })
	packets := len(gopPackets(b))
	frames = 0
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		feed()
	}
	b.StopTimer()
	if frames < 29*b.N {
		b.Fatalf("%d frames", frames)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*packets), "ns/packet")
	b.ReportMetric(float64(packets), "packets/op")
}

// BenchmarkReaderH264 is what one consumer (a recording, a broadcast destination, a
// conversion) pays to read frames: depacketizing, decode times, parameter sets.
func BenchmarkReaderH264(b *testing.B) { benchReader(b, func(*Frame) {}) }

// sharedFrame is a frame as the hub would hold it if packets carried frames (MediaMTX's unit):
// immutable and shared by every subscriber's queue, so in a buffer of its own.
type sharedFrame struct {
	pts, dts int64
	key      bool
	data     []byte
}

var kept *sharedFrame

// BenchmarkReaderH264Shared is what the producer of every track would pay if sfu.Packet carried
// the frame: the same reading, plus a frame that outlives the reader's reused buffers.
func BenchmarkReaderH264Shared(b *testing.B) {
	benchReader(b, func(f *Frame) {
		kept = &sharedFrame{pts: f.PTS, dts: f.DTS, key: f.Key, data: bytes.Clone(f.Data)}
	})
}

// TestReaderAllocs: once warm, reading H.264 allocates nothing per packet.
func TestReaderAllocs(t *testing.T) {
	r, _ := NewReader(H264Codec(sps, pps, 96))
	feed := gopFeeder(t, r, func(*Frame) {})
	if a := testing.AllocsPerRun(10, feed); a > 0 {
		t.Errorf("%.1f allocations per GOP, want 0", a)
	}
}
