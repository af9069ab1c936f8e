package rectest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu/rtc"
)

// WHIPPublish publishes the sources over WHIP to endpoint (…/whip/ROOM) from a pion peer on
// loopback, for d in real time. stop waits for the feed to end and closes the session.
func WHIPPublish(t testing.TB, endpoint string, d time.Duration, srcs ...*Track) (stop func()) {
	t.Helper()
	return whipPublish(t, endpoint, d, false, srcs)
}

// WHIPPublishFor is WHIPPublish whose stop ends the feed at once instead of waiting for d.
func WHIPPublishFor(t testing.TB, endpoint string, d time.Duration, srcs ...*Track) (stop func()) {
	t.Helper()
	return whipPublish(t, endpoint, d, true, srcs)
}

func whipPublish(t testing.TB, endpoint string, d time.Duration, cut bool, srcs []*Track) (stop func()) {
	t.Helper()
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	wapi, err := rtc.LoopbackAPI(m)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := wapi.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	var locals []*webrtc.TrackLocalStaticRTP
	for _, src := range srcs {
		c := webrtc.RTPCodecCapability{MimeType: src.Codec.MimeType(), ClockRate: src.Codec.ClockRate, Channels: src.Codec.Channels}
		if src.Codec.Name == "H264" {
			c.SDPFmtpLine = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
		}
		tr, err := webrtc.NewTrackLocalStaticRTP(c, string(src.Codec.Kind()), "pub")
		if err != nil {
			t.Fatal(err)
		}
		sender, err := pc.AddTrack(tr)
		if err != nil {
			t.Fatal(err)
		}
		go func() { // drain RTCP (PLI is ignored: the source has a keyframe every second)
			buf := make([]byte, 1500)
			for {
				if _, _, err := sender.Read(buf); err != nil {
					return
				}
			}
		}()
		locals = append(locals, tr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	sess, err := rtc.Negotiate(ctx, endpoint, "", pc)
	if err != nil {
		_ = pc.Close()
		t.Fatal(err)
	}
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		Feed(t, srcs, d, quit, func(i int, pk *rtp.Packet) { _ = locals[i].WriteRTP(pk) })
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			if cut {
				close(quit)
			}
			<-done
			_ = sess.Close(context.Background())
			_ = pc.Close()
		})
	}
}
