package broadcast

import (
	"bytes"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/pion/rtp"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
)

// discard is a publisher that counts what it is given, and copies it once into a buffer it
// reuses as the connection does into its chunks.
type discard struct {
	tags, bytes int
	buf         []byte
}

func (d *discard) WriteVideo(_ uint32, h, b []byte) error { return d.write(h, b) }
func (d *discard) WriteAudio(_ uint32, h, b []byte) error { return d.write(h, b) }

func (d *discard) write(h, b []byte) error {
	d.buf = append(append(d.buf[:0], h...), b...)
	d.tags++
	d.bytes += len(d.buf)
	return nil
}

func (d *discard) WriteMetadata(map[string]any) error { return nil }

// testTracks publishes an H.264 and an AAC track in a fresh hub.
func testTracks(tb testing.TB) (video, audio *sfu.Track) {
	tb.Helper()
	hub, err := sfu.NewHub(sfu.Options{Config: sfu.DefaultConfig()})
	if err != nil {
		tb.Fatal(err)
	}
	p, err := hub.Join("bench", sfu.ParticipantSpec{Kind: sfu.ParticipantRTMP})
	if err != nil {
		tb.Fatal(err)
	}
	video, err = p.Publish(sfu.TrackSpec{Codec: media.H264Codec(testSPS, testPPS, 96)})
	if err != nil {
		tb.Fatal(err)
	}
	audio, err = p.Publish(sfu.TrackSpec{Codec: media.AACCodec([]byte{0x11, 0x90}, 48000, 2, 97)})
	if err != nil {
		tb.Fatal(err)
	}
	return video, audio
}

// A 640x360 Constrained Baseline SPS and its PPS (from ffmpeg's libx264).
var (
	testSPS = []byte{0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2e, 0x48}
	testPPS = []byte{0x68, 0xcb, 0x83, 0xcb, 0x20}
)

// gop returns the RTP packets of 30 frames (an IDR with its parameter sets, then 29 slices of
// 6 kB each) and of 47 AAC frames (1 s), as sfu/media packetizes them.
func gop(tb testing.TB) (video, audio []*sfu.Packet) {
	tb.Helper()
	venc := &rtph264.Encoder{PayloadType: 96, PayloadMaxSize: media.MaxPayload, PacketizationMode: 1}
	aenc := &rtpmpeg4audio.Encoder{PayloadType: 97, PayloadMaxSize: media.MaxPayload, SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3}
	if err := venc.Init(); err != nil {
		tb.Fatal(err)
	}
	if err := aenc.Init(); err != nil {
		tb.Fatal(err)
	}
	for i := range 30 {
		au := [][]byte{append([]byte{0x41}, bytes.Repeat([]byte{byte(i)}, 6000)...)}
		if i == 0 {
			au = [][]byte{testSPS, testPPS, append([]byte{0x65}, bytes.Repeat([]byte{9}, 20000)...)}
		}
		pkts, err := venc.Encode(au)
		if err != nil {
			tb.Fatal(err)
		}
		for j, p := range pkts {
			video = append(video, packet(p, uint32(i*3000), i == 0 && j == 0))
		}
	}
	for i := range 47 {
		pkts, err := aenc.Encode([][]byte{bytes.Repeat([]byte{byte(i)}, 300)})
		if err != nil {
			tb.Fatal(err)
		}
		for _, p := range pkts {
			audio = append(audio, packet(p, uint32(i*1024), false))
		}
	}
	return video, audio
}

func packet(p *rtp.Packet, ts uint32, key bool) *sfu.Packet {
	h := p.Header
	h.Timestamp = ts
	return &sfu.Packet{Header: h, Payload: p.Payload, Keyframe: key}
}

// newBenchDestination is a destination bound to the tracks, writing to pub.
func newBenchDestination(video, audio *sfu.Track, pub publisher) *destination {
	d := &destination{m: newMux(time.Now())}
	d.emitV, d.emitA = d.writeVideo, d.writeAudio
	d.setBinding(&binding{video: video, audio: audio, asc: []byte{0x11, 0x90}, sampleRate: 48000, channels: 2})
	d.m.setConn(pub, nil)
	return d
}

// BenchmarkBroadcastPacket measures the per-packet path of a destination: RTP in (video and
// audio, as the subscriptions deliver them), depacketizing, FLV tags, the publisher's write.
// The publisher copies each tag once and discards it: this is the broadcaster's own cost and the
// copy into the connection's buffer (see rtmp's BenchmarkWriteVideo for the connection's).
func BenchmarkBroadcastPacket(b *testing.B) {
	vt, at := testTracks(b)
	video, audio := gop(b)
	pub := &discard{}
	d := newBenchDestination(vt, at, pub)
	seq := uint16(0)
	aseq := uint16(0)
	var vts, ats uint32
	qs := make([]sfu.Packet, len(video)+len(audio)) // the hub's packets are on the heap already
	feed := func() {
		for i, p := range video {
			q := &qs[i]
			*q = *p
			q.Header.SequenceNumber = seq
			q.Header.Timestamp += vts
			seq++
			_ = d.videoSink(q, false)
		}
		for i, p := range audio {
			q := &qs[len(video)+i]
			*q = *p
			q.Header.SequenceNumber = aseq
			q.Header.Timestamp += ats
			aseq++
			_ = d.audioSink(q, false)
		}
		vts += 90000
		ats += 47 * 1024
	}
	feed() // warm the buffers
	perRound := len(video) + len(audio)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		feed()
	}
	b.StopTimer()
	if pub.tags < 2*(30+47) {
		b.Fatalf("%d tags written", pub.tags)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perRound), "ns/packet")
	b.ReportMetric(float64(perRound), "packets/op")
}

// TestBroadcastPacketAllocs: once warm, the per-packet path allocates nothing.
func TestBroadcastPacketAllocs(t *testing.T) {
	vt, at := testTracks(t)
	video, audio := gop(t)
	pub := &discard{}
	d := newBenchDestination(vt, at, pub)
	var seq, aseq uint16
	var round uint32
	qs := make([]sfu.Packet, len(video)+len(audio))
	feed := func() {
		for i, p := range video {
			qs[i] = *p
			qs[i].Header.SequenceNumber = seq
			qs[i].Header.Timestamp += round * 90000
			seq++
			_ = d.videoSink(&qs[i], false)
		}
		for i, p := range audio {
			q := &qs[len(video)+i]
			*q = *p
			q.Header.SequenceNumber = aseq
			q.Header.Timestamp += round * 47 * 1024
			aseq++
			_ = d.audioSink(q, false)
		}
		round++
	}
	feed()
	feed()
	allocs := testing.AllocsPerRun(20, feed)
	per := allocs / float64(len(video)+len(audio))
	t.Logf("%.3f allocations per packet (%.1f per GOP of %d packets), %d tags", per, allocs, len(video)+len(audio), pub.tags)
	if per > 0.01 {
		t.Errorf("%.3f allocations per packet, want 0", per)
	}
}
