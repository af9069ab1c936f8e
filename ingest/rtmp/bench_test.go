package rtmp

import (
	"bytes"
	"log/slog"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
)

// BenchmarkVideoTagToRTP measures the media path of one video message: reading the payload,
// parsing the FLV tag, the clock, splitting NAL units and packetizing them into the track
// (one subscriber drains it). A frame is 15 KB (13 RTP packets), a keyframe of 60 KB every
// 60 frames.
func BenchmarkVideoTagToRTP(b *testing.B) {
	hub, err := sfu.NewHub(sfu.Options{Config: sfu.DefaultConfig()})
	if err != nil {
		b.Fatal(err)
	}
	defer hub.Close()
	p, err := hub.Join("bench", sfu.ParticipantSpec{Identity: "obs", Kind: sfu.ParticipantRTMP})
	if err != nil {
		b.Fatal(err)
	}
	s := &Server{clock: time.Now, lim: newLimits(8 << 20)}
	c := &conn{s: s, log: slog.New(slog.DiscardHandler), protocol: sfu.ProtocolRTMP, sess: &session{}}
	pub := newPublisher(c, p)
	if err := pub.onVideo(0, bytes.NewReader(avcTag(true, 0, 0, avcConfigRecord(testSPS, testPPS)))); err != nil {
		b.Fatal(err)
	}
	sub, err := pub.video.track.Subscribe(sfu.SinkFunc(func(*sfu.Packet, bool) error { return nil }), sfu.SubscribeOptions{QueueSize: 1 << 16})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	key := avcTag(true, 1, 0, lengthPrefixed(fakeIDR(60000)))
	delta := avcTag(false, 1, 33, lengthPrefixed(fakeSlice(15000)))
	r := bytes.NewReader(nil)
	b.SetBytes(int64(len(delta)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tag := delta
		if i%60 == 0 {
			tag = key
		}
		r.Reset(tag)
		if err := pub.onVideo(uint32(i*33), r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkChunkGuard measures the guard on a stream of 9 KB video and 300-byte audio
// messages in 4 KiB chunks, read in 4 KiB reads as go-rtmp's bufio does.
func BenchmarkChunkGuard(b *testing.B) {
	in := sessionBytes(300, 9000)
	buf := make([]byte, 4096)
	r := bytes.NewReader(nil)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.Reset(in)
		g := newChunkGuard(r, newLimits(8<<20))
		for {
			if _, err := g.Read(buf); err != nil {
				break
			}
		}
	}
}
