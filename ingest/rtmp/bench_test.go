package rtmp

import (
	"bytes"
	"log/slog"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/rtmpproto"
	"github.com/sluice-media/sluice/sfu/rtmpproto/rtmptest"
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
	s := &Server{clock: time.Now, lim: rtmpproto.ServerLimits(8 << 20)}
	c := &conn{s: s, log: slog.New(slog.DiscardHandler), protocol: sfu.ProtocolRTMP, sess: &session{}}
	pub := newPublisher(c, p)
	if err := pub.onVideo(0, bytes.NewReader(rtmptest.AVCTag(true, 0, 0, rtmptest.AVCConfigRecord(rtmptest.SPS, rtmptest.PPS)))); err != nil {
		b.Fatal(err)
	}
	sub, err := pub.video.track.Subscribe(sfu.SinkFunc(func(*sfu.Packet, bool) error { return nil }), sfu.SubscribeOptions{QueueSize: 1 << 16})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	key := rtmptest.AVCTag(true, 1, 0, rtmptest.LengthPrefixed(rtmptest.FakeIDR(60000)))
	delta := rtmptest.AVCTag(false, 1, 33, rtmptest.LengthPrefixed(rtmptest.FakeSlice(15000)))
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
