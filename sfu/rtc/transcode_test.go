package rtc

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/transport/v4/test"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
)

var aacCodec = sfu.Codec{Name: sfu.CodecAAC, ClockRate: 48000, Channels: 2, PayloadType: 97,
	Fmtp: "profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=1190"}

// ingestPublisher is an in-process publisher as an RTMP ingest makes one: synthetic H.264 and
// an AAC track (whose packets no viewer can play without a transcoder).
type ingestPublisher struct {
	p            *sfu.Participant
	video, audio *sfu.Track
	stop, done   chan struct{}
}

func publishIngest(t *testing.T, h *sfu.Hub, room, identity string, withVideo bool) *ingestPublisher {
	t.Helper()
	p, err := h.Join(room, sfu.ParticipantSpec{Identity: identity, Kind: sfu.ParticipantRTMP})
	if err != nil {
		t.Fatal(err)
	}
	ip := &ingestPublisher{p: p, stop: make(chan struct{}), done: make(chan struct{})}
	if withVideo {
		ip.video, err = p.Publish(sfu.TrackSpec{Codec: sfu.Codec{Name: sfu.CodecH264, ClockRate: 90000, PayloadType: 96,
			Fmtp: "packetization-mode=1;profile-level-id=42e01f"}, CacheGOP: true})
		if err != nil {
			t.Fatal(err)
		}
	}
	ip.audio, err = p.Publish(sfu.TrackSpec{Codec: aacCodec})
	if err != nil {
		t.Fatal(err)
	}
	go ip.run()
	return ip
}

func (ip *ingestPublisher) run() {
	defer close(ip.done)
	tick := time.NewTicker(33 * time.Millisecond)
	defer tick.Stop()
	var seq uint16
	for n := 0; ; n++ {
		select {
		case <-ip.stop:
			return
		case <-tick.C:
		}
		if ip.video != nil {
			for _, pkt := range h264Frame(n, &seq) {
				ip.video.WritePacket(&sfu.Packet{Header: pkt.Header, Payload: pkt.Payload, Keyframe: sfu.IsKeyframe(sfu.CodecH264, pkt.Payload)})
			}
		}
		ip.audio.WritePacket(&sfu.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(n), Timestamp: uint32(n * 1024)}, Payload: []byte{0, 16, 1, 0, 0x21}})
	}
}

func (ip *ingestPublisher) close() {
	close(ip.stop)
	<-ip.done
	ip.p.Close(sfu.ReasonClientDisconnected, nil)
}

// opusTranscoder stands in for egress/transcode in the core's tests: each conversion is a
// derived Opus track fed with synthetic packets while it is held.
type opusTranscoder struct {
	mu       sync.Mutex
	acquired map[*sfu.Track]int
	released atomic.Int32
	wg       sync.WaitGroup
}

func (o *opusTranscoder) Transcode(src *sfu.Track, to string) (*sfu.Track, func(), error) {
	if to != sfu.CodecOpus {
		return nil, nil, errors.New("only opus")
	}
	out, end, err := src.Derive(sfu.TrackSpec{Codec: sfu.Codec{Name: sfu.CodecOpus, ClockRate: 48000, Channels: 2, PayloadType: 111}})
	if err != nil {
		return nil, nil, err
	}
	o.mu.Lock()
	if o.acquired == nil {
		o.acquired = map[*sfu.Track]int{}
	}
	o.acquired[src]++
	o.mu.Unlock()
	stop := make(chan struct{})
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-out.Done():
				return
			case <-tick.C:
				out.WritePacket(&sfu.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(n), Timestamp: uint32(n * 960)}, Payload: []byte{0xfc, 0xff, 0xfe}})
			}
		}
	}()
	var once sync.Once
	return out, func() {
		once.Do(func() {
			close(stop)
			end()
			o.released.Add(1)
		})
	}, nil
}

func (o *opusTranscoder) count(src *sfu.Track) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.acquired[src]
}

// A WHEP viewer of an AAC source gets its audio through the hub's transcoder, releases it when
// it leaves, and moves to the next source's conversion when the main publisher changes.
func TestWHEPTranscodesWhatTheViewerCannotTake(t *testing.T) {
	defer test.CheckRoutines(t)()
	h := newHarness(t, auth.Config{})
	defer h.close()
	tc := &opusTranscoder{}
	defer tc.wg.Wait()
	h.hub.SetTranscoder(tc)
	client := clientAPI(t)

	first := publishIngest(t, h.hub, "studio", "obs", true)
	v := play(t, client, h.http.URL+"/whep/studio", "", true)
	waitUntil(t, "video and transcoded audio", 20*time.Second, func() bool { return v.video.Load() > 30 && v.audio.Load() > 20 })
	if tc.count(first.audio) != 1 {
		t.Fatalf("%d conversions of the first source, want 1", tc.count(first.audio))
	}

	second := publishIngest(t, h.hub, "studio", "obs2", true)
	defer second.close()
	first.close() // the main publisher changes: the viewer follows, with a new conversion
	audio := v.audio.Load()
	waitUntil(t, "audio from the second source", 20*time.Second, func() bool {
		return tc.count(second.audio) == 1 && v.audio.Load() > audio+20
	})
	if tc.released.Load() != 1 {
		t.Fatalf("%d releases after the switch, want 1 (the first source's)", tc.released.Load())
	}
	v.close()
	waitUntil(t, "the viewer's release", 10*time.Second, func() bool { return tc.released.Load() == 2 })

	var subscribed []string
	for _, e := range h.events.Events(0) {
		if e.Type == sfu.EventTrackSubscribed && e.Track.Kind == "audio" {
			subscribed = append(subscribed, e.Track.Codec+" from "+e.Track.TranscodedFrom)
		}
	}
	if len(subscribed) != 2 || subscribed[0] != "opus from "+first.audio.SID() || subscribed[1] != "opus from "+second.audio.SID() {
		t.Fatalf("audio track.subscribed events %v", subscribed)
	}
}

// Without a transcoder, a viewer gets what it can take; what it cannot is refused with
// track.subscription_failed naming the missing transcoder, and an AAC-only source answers 406.
func TestWHEPWithoutTranscoder(t *testing.T) {
	defer test.CheckRoutines(t)()
	h := newHarness(t, auth.Config{})
	defer h.close()
	client := clientAPI(t)

	pub := publishIngest(t, h.hub, "studio", "obs", true)
	defer pub.close()
	v := play(t, client, h.http.URL+"/whep/studio", "", true)
	waitUntil(t, "video", 20*time.Second, func() bool { return v.video.Load() > 30 })
	v.close()
	var failed *sfu.Event
	evs := h.events.Events(0)
	for i, e := range evs {
		if e.Type == sfu.EventTrackSubscriptionFailed {
			failed = &evs[i]
		}
	}
	if failed == nil || failed.Track.SID != pub.audio.SID() || failed.Error.Code != "transcoder_unavailable" ||
		!strings.Contains(failed.Error.Message, "no transcoder") {
		t.Fatalf("subscription_failed event %+v", failed)
	}
	if v.audio.Load() != 0 {
		t.Fatal("the viewer got AAC packets it cannot play")
	}

	audioOnly := publishIngest(t, h.hub, "radio", "obs", false)
	defer audioOnly.close()
	pc, err := client.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = Negotiate(ctx, h.http.URL+"/whep/radio/obs", "", pc)
	if err == nil || !strings.Contains(err.Error(), "406") || !strings.Contains(err.Error(), "no transcoder") {
		t.Fatalf("an AAC-only source without a transcoder: %v", err)
	}
}
