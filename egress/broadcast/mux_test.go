package broadcast

import (
	"slices"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
)

// TestClockSenderReports: with sender reports from a publisher whose clock is an hour off,
// the timeline starts at the local arrival and audio sits where the reports put it against
// the video, not where its late arrival would.
func TestClockSenderReports(t *testing.T) {
	video, audio := testTracks(t)
	epoch := time.Now()
	remote := epoch.Add(-time.Hour) // the publisher's wall clock
	video.SetSenderReport(sfu.SenderReport{RTPTime: 90000, NTPTime: remote})
	audio.SetSenderReport(sfu.SenderReport{RTPTime: 48000, NTPTime: remote})
	var off srOffset
	var vc, ac clock
	vc.reset(90000, epoch.UnixNano())
	ac.reset(48000, epoch.UnixNano())
	// Video rtp 90000 arrives 1 s after the epoch; audio of the same instant arrives 300 ms later.
	v := vc.rtp(video, 90000, epoch.Add(time.Second).UnixNano(), &off)
	a := ac.rtp(audio, 48000, epoch.Add(1300*time.Millisecond).UnixNano(), &off)
	if got := vc.ms(v); got != 1000 {
		t.Errorf("video at %d ms, want 1000", got)
	}
	if got := ac.ms(a); got != 1000 {
		t.Errorf("audio at %d ms, want 1000 (the same instant by the reports)", got)
	}
	// Wrap-around of the 32-bit RTP clock keeps counting forward.
	var wc clock
	var u media.Unwrapper
	wc.reset(90000, epoch.UnixNano())
	wc.rtp(nil, u.Unwrap(0xffffff00), epoch.UnixNano(), &srOffset{})
	if rel := wc.rtp(nil, u.Unwrap(0x100), epoch.UnixNano(), &srOffset{}); rel != 0x200 {
		t.Errorf("after the wrap: %d", rel)
	}
}

// TestMuxHeadersAndKeyframes: headers come first on every connection, video starts on a
// keyframe, audio waits for it, and timestamps do not go back across a reconnect.
func TestMuxHeadersAndKeyframes(t *testing.T) {
	video, audio := testTracks(t)
	epoch := time.Now()
	m := newMux(epoch)
	m.setBinding(&binding{video: video, audio: audio, asc: []byte{0x11, 0x90}, sampleRate: 48000, channels: 2})
	rec := &recorder{}
	frame := func(ms int, key bool, nalus ...[]byte) *media.Frame {
		return &media.Frame{PTS: int64(ms) * 90, DTS: int64(ms) * 90, Key: key, NALUs: nalus}
	}
	audioAt := func(ms int, b byte) *media.Frame {
		return &media.Frame{PTS: int64(ms) * 48, DTS: int64(ms) * 48, Key: true, Data: []byte{b}}
	}
	at := func(ms int) int64 { return epoch.Add(time.Duration(ms) * time.Millisecond).UnixNano() }
	for conn := range 2 {
		m.setConn(rec, nil)
		rec.tags = nil
		base := conn * 10000
		if want, _ := m.video(frame(base, false, []byte{0x41, 0x9a, 3}), at(base), testSPS, testPPS); !want {
			t.Error("a slice before any keyframe should ask for one")
		}
		_ = m.audio(audioAt(base, 1), at(base))
		_, _ = m.video(frame(base+40, true, testSPS, testPPS, []byte{0x65, 0x88, 1, 2}), at(base+40), testSPS, testPPS)
		_ = m.audio(audioAt(base+40, 2), at(base+40))
		want := []string{"meta", "avc-header", "aac-header", "video-key", "audio"}
		if len(rec.tags) != len(want) {
			t.Fatalf("connection %d: tags %v, want %v", conn, rec.tags, want)
		}
		for i := range want {
			if rec.tags[i] != want[i] {
				t.Fatalf("connection %d: tags %v, want %v", conn, rec.tags, want)
			}
		}
	}
	if rec.lastTS < 10000 {
		t.Errorf("timestamps went back after the reconnect: %d", rec.lastTS)
	}
}

type recorder struct {
	tags   []string
	lastTS uint32
}

func (r *recorder) WriteVideo(ts uint32, h, d []byte) error {
	b := slices.Concat(h, d)
	switch {
	case b[1] == 0:
		r.tags = append(r.tags, "avc-header")
	case b[0]>>4 == 1:
		r.tags = append(r.tags, "video-key")
	default:
		r.tags = append(r.tags, "video")
	}
	r.lastTS = max(r.lastTS, ts)
	return nil
}

func (r *recorder) WriteAudio(ts uint32, h, d []byte) error {
	b := slices.Concat(h, d)
	if b[1] == 0 {
		r.tags = append(r.tags, "aac-header")
	} else {
		r.tags = append(r.tags, "audio")
	}
	r.lastTS = max(r.lastTS, ts)
	return nil
}

func (r *recorder) WriteMetadata(map[string]any) error {
	r.tags = append(r.tags, "meta")
	return nil
}
