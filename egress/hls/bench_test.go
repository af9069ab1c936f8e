package hls

import (
	"bytes"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gohlslib/v2"

	"github.com/sluice-media/sluice/egress/egresstest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// BenchmarkLegH264 is the muxer's cost per packet of one second of 30 fps H.264 (an IDR and 29
// P-frames of 2 kB): frame reading, the copy handed to gohlslib, and gohlslib's muxing (most of
// the allocations: its fMP4 parts are marshalled by reflection).
func BenchmarkLegH264(b *testing.B) {
	hub, _ := sfutest.NewHub(b, nil)
	p, err := hub.Join("bench", sfu.ParticipantSpec{Identity: "cam"})
	if err != nil {
		b.Fatal(err)
	}
	vt, err := p.Publish(sfu.TrackSpec{Codec: media.H264Codec(egresstest.SPS, egresstest.PPS, 96)})
	if err != nil {
		b.Fatal(err)
	}
	// one second of packets, captured as the track's subscribers get them
	var mu sync.Mutex
	var pkts []sfu.Packet
	sub, _ := vt.Subscribe(sfu.SinkFunc(func(pk *sfu.Packet, _ bool) error {
		c := *pk
		c.Payload = bytes.Clone(pk.Payload)
		mu.Lock()
		pkts = append(pkts, c)
		mu.Unlock()
		return nil
	}), sfu.SubscribeOptions{})
	w, _ := media.NewWriter(vt)
	for i := range 30 {
		au := [][]byte{append([]byte{0x41, 0x9a}, bytes.Repeat([]byte{byte(i)}, 2000)...)}
		if i == 0 {
			au = [][]byte{egresstest.SPS, egresstest.PPS, append([]byte{0x65, 0x88}, bytes.Repeat([]byte{1}, 8000)...)}
		}
		_ = w.Write(uint32(i*3000), au)
	}
	sfutest.WaitFor(b, "packets", 5*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(pkts) > 30 })
	sub.Close()

	s := &Server{opts: Options{Config: DefaultConfig(), Hub: hub}, log: slog.New(slog.DiscardHandler)}
	m := newMuxer(s, muxerKey{room: "bench"})
	g := &generation{}
	l, err := newLeg(m, g, vt)
	if err != nil {
		b.Fatal(err)
	}
	g.mux = &gohlslib.Muxer{Tracks: []*gohlslib.Track{l.track}, OnEncodeError: func(error) {}}
	if err := g.mux.Start(); err != nil {
		b.Fatal(err)
	}
	defer g.mux.Close()
	now := time.Now().UnixNano()
	var seq uint16
	var c sfu.Packet
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; {
		round := uint32(i / len(pkts))
		for _, pk := range pkts {
			c = pk
			c.Header.Timestamp += round * 90000
			c.Header.SequenceNumber = seq
			c.Arrival = now + int64(round)*int64(time.Second)
			seq++
			_ = l.write(&c, false)
			if i++; i == b.N {
				break
			}
		}
	}
	b.StopTimer()
	if n := m.encodeErrors.Load(); n > 0 {
		b.Fatalf("%d encode errors", n)
	}
}
