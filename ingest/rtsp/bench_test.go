package rtsp

import (
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/pion/rtp"

	"github.com/sluice-media/sluice/ingest/rtsp/rtsptest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// benchInput publishes an input's track (with one subscriber that drops everything, as a
// viewer would read) and returns it.
func benchInput(b *testing.B, f format.Format) *input {
	b.Helper()
	hub, err := sfu.NewHub(sfu.Options{Config: sfu.DefaultConfig()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(hub.Close)
	m := &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{f}}
	in, err := newInput(m, f, time.Now)
	if err != nil {
		b.Fatal(err)
	}
	p, err := hub.Join("bench", sfu.ParticipantSpec{Identity: "cam"})
	if err != nil {
		b.Fatal(err)
	}
	tr, err := p.Publish(in.trackSpec())
	if err != nil {
		b.Fatal(err)
	}
	if err := in.attach(tr); err != nil {
		b.Fatal(err)
	}
	sub, err := tr.Subscribe(sfu.SinkFunc(func(*sfu.Packet, bool) error { return nil }), sfu.SubscribeOptions{QueueSize: 8192})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(sub.Close)
	return in
}

// BenchmarkInputH264 is the camera path of one video packet: depacketize (1,400-byte camera
// packets, FU-A), re-packetize to the WebRTC MTU with parameter sets before keyframes, fan out.
func BenchmarkInputH264(b *testing.B) {
	fx := rtsptest.LoadFixtures(b)
	enc := &rtph264.Encoder{PayloadType: 96, PayloadMaxSize: 1400, PacketizationMode: 1}
	if err := enc.Init(); err != nil {
		b.Fatal(err)
	}
	var pkts []*rtp.Packet
	var bytes int
	for i, au := range fx.Video {
		ps, err := enc.Encode(au)
		if err != nil {
			b.Fatal(err)
		}
		for _, p := range ps {
			p.Timestamp = uint32(i * 3600)
			bytes += len(p.Payload)
		}
		pkts = append(pkts, ps...)
	}
	in := benchInput(b, &format.H264{PayloadTyp: 96, PacketizationMode: 1, SPS: fx.SPS, PPS: fx.PPS})
	b.SetBytes(int64(bytes / len(pkts)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		in.onRTP(pkts[i%len(pkts)])
	}
}

// BenchmarkInputPCMU is the pass-through path of one G.711 packet.
func BenchmarkInputPCMU(b *testing.B) {
	in := benchInput(b, &format.G711{PayloadTyp: 0, MULaw: true, SampleRate: 8000, ChannelCount: 1})
	pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0}, Payload: make([]byte, 160)}
	b.SetBytes(160)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		pkt.SequenceNumber = uint16(i)
		in.onRTP(pkt)
	}
}

// BenchmarkPlayWrite is the RTSP play path of one packet for one player: header rewrite and
// continuous numbering (ours), then gortsplib's marshal into its send queue.
func BenchmarkPlayWrite(b *testing.B) {
	h := newHarness(b, harnessOptions{})
	var srv *gortsplib.Server
	sfutest.WaitFor(b, "the RTSP server", 10*time.Second, func() bool {
		h.srv.mu.Lock()
		defer h.srv.mu.Unlock()
		srv = h.srv.rtsp
		return h.srv.running
	})
	f := &format.H264{PayloadTyp: 96, PacketizationMode: 1}
	m := &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{f}, Control: "trackID=0"}
	stream := &gortsplib.ServerStream{Server: srv, Desc: &description.Session{Medias: []*description.Media{m}}}
	if err := stream.Initialize(); err != nil {
		b.Fatal(err)
	}
	defer stream.Close()
	pl := &player{s: h.srv, stream: stream, active: make(chan struct{}), ended: make(chan struct{})}
	close(pl.active)
	sl := &playSlot{pl: pl, kind: sfu.KindVideo, media: m, pt: 96, codec: sfu.Codec{Name: sfu.CodecH264, ClockRate: 90000},
		m: sfu.Munger{ClockRate: 90000}}
	pkt := &sfu.Packet{Header: rtp.Header{Version: 2, PayloadType: 102, Timestamp: 1000}, Payload: make([]byte, 1100)}
	b.SetBytes(int64(len(pkt.Payload)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		pkt.Header.SequenceNumber = uint16(i)
		if err := sl.WritePacket(pkt, false); err != nil {
			b.Fatal(err)
		}
	}
}
