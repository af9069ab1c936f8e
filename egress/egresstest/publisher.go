package egresstest

import (
	"bytes"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
)

// SPS and PPS are the H.264 parameter sets of the Publisher's stream (Constrained Baseline).
var (
	SPS = []byte{0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2e, 0x48}
	PPS = []byte{0x68, 0xcb, 0x83, 0xcb, 0x20}
)

// Publisher writes synthetic H.264 (parameter sets and an IDR every 30 frames) and AAC into a
// participant's tracks at 30 fps, like an ingest, until Close (or the end of the test).
type Publisher struct {
	p    *sfu.Participant
	stop chan struct{}
	done chan struct{}
}

// PublisherOptions change what a Publisher sends.
type PublisherOptions struct {
	// Opus sends Opus (20 ms frames) instead of AAC.
	Opus bool
}

// StartPublisher joins room as identity (kind rtmp) and starts publishing H.264 and AAC.
func StartPublisher(t testing.TB, hub *sfu.Hub, room, identity string) *Publisher {
	t.Helper()
	return StartPublisherWith(t, hub, room, identity, PublisherOptions{})
}

// StartPublisherWith is StartPublisher with options.
func StartPublisherWith(t testing.TB, hub *sfu.Hub, room, identity string, opts PublisherOptions) *Publisher {
	t.Helper()
	p, err := hub.Join(room, sfu.ParticipantSpec{Identity: identity, Kind: sfu.ParticipantRTMP})
	if err != nil {
		t.Fatal(err)
	}
	vt, err := p.Publish(sfu.TrackSpec{Codec: media.H264Codec(SPS, PPS, 96), CacheGOP: true})
	if err != nil {
		t.Fatal(err)
	}
	ac := media.AACCodec([]byte{0x11, 0x90}, 48000, 2, 97)
	if opts.Opus {
		ac = sfu.Codec{Name: sfu.CodecOpus, ClockRate: 48000, Channels: 2, PayloadType: 111}
	}
	at, err := p.Publish(sfu.TrackSpec{Codec: ac})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	vt.SetSenderReport(sfu.SenderReport{RTPTime: 0, NTPTime: now})
	at.SetSenderReport(sfu.SenderReport{RTPTime: 0, NTPTime: now})
	vw, _ := media.NewWriter(vt)
	aw, _ := media.NewWriter(at)
	f := &Publisher{p: p, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		tick := time.NewTicker(time.Second / 30)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-f.stop:
				return
			case <-tick.C:
			}
			au := [][]byte{append([]byte{0x41, 0x9a}, bytes.Repeat([]byte{byte(i)}, 2000)...)}
			if i%30 == 0 {
				au = [][]byte{SPS, PPS, append([]byte{0x65, 0x88}, bytes.Repeat([]byte{1}, 8000)...)}
			}
			_ = vw.Write(uint32(i*3000), au)
			if opts.Opus { // the 20 ms frames that start within this video frame
				for n := (i*3 + 1) / 2; n < ((i+1)*3+1)/2; n++ {
					_ = aw.Write(uint32(n*960), [][]byte{append([]byte{0x58}, bytes.Repeat([]byte{byte(n)}, 80)...)})
				}
				continue
			}
			for j := range 2 { // 1.4 AAC frames per video frame: close enough
				_ = aw.Write(uint32((i*2+j)*1024*3/4), [][]byte{bytes.Repeat([]byte{byte(j + 1)}, 200)})
			}
		}
	}()
	t.Cleanup(f.Close)
	return f
}

// Close stops publishing and leaves the room. Idempotent; not safe for concurrent use.
func (f *Publisher) Close() {
	select {
	case <-f.stop:
		return
	default:
	}
	close(f.stop)
	<-f.done
	f.p.Close(sfu.ReasonClientDisconnected, nil)
}
