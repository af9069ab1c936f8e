package transcode

import (
	"sort"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
)

// BenchmarkAACToOpusLatency measures the audio latency the AAC -> Opus conversion adds: from
// when the source wrote the AAC frame holding an instant to when the Opus packet starting at
// that instant reached a subscriber of the derived track. One op is one 20 ms output packet,
// at the real-time pace of the source (ns/op is that pace, not a cost); run it with
// -benchtime 500x. Reported: latency-p50-ms and latency-p95-ms as above (they include waiting
// for the 20 ms the packet holds), and processing-p50-ms, measured from the frame holding the
// packet's last sample instead (ffmpeg's decoding, resampling, encoding and the pipes).
func BenchmarkAACToOpusLatency(b *testing.B) {
	h, _ := newHub(b)
	m := newManager(b, nil, nil)
	src := startAACSource(b, h, "room", "obs", toneADTS(b, 44100, 10))
	out, release, err := m.Transcode(src.track, sfu.CodecOpus)
	if err != nil {
		b.Fatal(err)
	}
	defer release()
	got := &packetLog{}
	sub, err := out.Subscribe(got, sfu.SubscribeOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	const warmup = 25 // ffmpeg's start
	deadline := time.Now().Add(time.Minute)
	for got.count() < warmup && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for got.count() < warmup+i+1 {
			time.Sleep(time.Millisecond)
		}
	}
	b.StopTimer()
	pkts, at := got.snapshot()
	srcSR, _ := src.track.SenderReport()
	outSR, _ := out.SenderReport()
	toSource := func(ts uint32) uint32 {
		return srcSR.RTPTime + uint32(int64(int32(ts-outSR.RTPTime))*int64(src.rate)/48000)
	}
	var first, last []float64
	for i := warmup; i < len(pkts); i++ {
		ts := pkts[i].Header.Timestamp
		if w, ok := src.writtenAt(toSource(ts)); ok {
			first = append(first, float64(at[i].Sub(w).Microseconds())/1000)
		}
		if w, ok := src.writtenAt(toSource(ts + 959)); ok {
			last = append(last, float64(at[i].Sub(w).Microseconds())/1000)
		}
	}
	if len(first) == 0 {
		b.Fatal("no latency measured")
	}
	b.ReportMetric(percentile(first, 50), "latency-p50-ms")
	b.ReportMetric(percentile(first, 95), "latency-p95-ms")
	b.ReportMetric(percentile(last, 50), "processing-p50-ms")
}

func percentile(v []float64, p int) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[min(len(s)-1, len(s)*p/100)]
}
