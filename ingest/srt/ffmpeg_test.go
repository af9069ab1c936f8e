package srt

import (
	"fmt"
	"github.com/sluice-media/sluice/ingest/ingesttest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// ffmpegArgs are an SRT publish as OBS sends one: libx264 Constrained Baseline (no B-frames, so
// that frame times step by exactly 3000), a keyframe a second at 30 fps, AAC at 48 kHz, in real
// time, in MPEG-TS, to url.
func ffmpegArgs(url string, seconds int) []string {
	return []string{"-hide_banner", "-loglevel", "warning", "-re",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", fmt.Sprint(seconds),
		"-c:v", "libx264", "-profile:v", "baseline", "-preset", "veryfast", "-g", "30", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-ar", "48000", "-b:a", "64k",
		"-f", "mpegts", url}
}

// srtURL is an ffmpeg SRT URL with a stream id (ffmpeg's latency is in microseconds).
func srtURL(addr, streamID, extra string) string {
	return "srt://" + addr + "?streamid=" + streamID + "&latency=200000" + extra
}

// everyFrame fails unless the frame times step by exactly one frame (3000 at 30 fps): no
// frame is missing between the first and the last seen.
func everyFrame(t *testing.T, ts []uint32) {
	t.Helper()
	for i := 1; i < len(ts); i++ {
		if d := ts[i] - ts[i-1]; d != 3000 {
			t.Fatalf("frame %d of %d: time step %d, want 3000 (a frame is missing)", i, len(ts), d)
		}
	}
}

// ffmpeg publishes H.264 and AAC over SRT (its libsrt) in open mode: the participant is of
// kind srt with both tracks, every frame arrives, the stream is reported with protocol srt, and
// stream.stats carries the SRT round-trip time, loss and retransmissions.
func TestFFmpegPublish(t *testing.T) {
	h := newHarness(t, harnessOptions{stats: 500 * time.Millisecond})
	_, exited := ingesttest.Start(t, &sfutest.Buffer{}, "ffmpeg", ffmpegArgs(srtURL(h.addr, "publish:studio/ff", ""), 5)...)
	p := h.Participant("studio", "ff")
	if p.Kind() != sfu.ParticipantSRT {
		t.Errorf("participant kind %q, want srt", p.Kind())
	}
	video := ingesttest.TrackOf(t, p, sfu.KindVideo)
	audio := ingesttest.TrackOf(t, p, sfu.KindAudio)
	if c := video.Codec(); c.Name != sfu.CodecH264 || !strings.Contains(c.Fmtp, "sprop-parameter-sets") {
		t.Errorf("video codec %+v", c)
	}
	if c := audio.Codec(); c.Name != sfu.CodecAAC || c.ClockRate != 48000 {
		t.Errorf("audio codec %+v", c)
	}
	f := &frames{}
	sub, err := video.Subscribe(f, sfu.SubscribeOptions{QueueSize: 8192})
	ingesttest.Must(t, err)
	defer sub.Close()
	e := h.WaitEvent("stream.publishing", 10*time.Second, ingesttest.Is(sfu.EventStreamPublishing, "ff"))
	if e.Stream.Protocol != sfu.ProtocolSRT {
		t.Errorf("stream protocol %q", e.Stream.Protocol)
	}
	st := h.WaitEvent("stream.stats with rtt", 10*time.Second, func(e sfu.Event) bool {
		return e.Type == sfu.EventStreamStats && e.Stream.RTTMs != nil && e.Stream.Retransmits != nil
	})
	if *st.Stream.RTTMs < 0 || st.Stream.PacketsLost == nil || st.Stream.Bytes == nil || *st.Stream.Bytes <= 0 {
		t.Errorf("stream.stats %+v", st.Stream)
	}
	<-exited
	h.WaitEvent("participant.left", 10*time.Second, ingesttest.Is(sfu.EventParticipantLeft, "ff"))
	ts, keys := f.snapshot()
	if len(ts) < 60 || keys < 2 {
		t.Fatalf("%d frames, %d keyframes through the subscription", len(ts), keys)
	}
	everyFrame(t, ts)
}

// srt-live-transmit (Haivision's reference tool) pushes a TS file with H.265 and Opus, paced
// in real time by ffmpeg, with the access-control stream id: both tracks arrive.
func TestSRTLiveTransmitHEVCOpus(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ffmpeg := sfutest.RequireTool(t, "ffmpeg")
	slt := sfutest.RequireTool(t, "srt-live-transmit")
	file := filepath.Join(t.TempDir(), "in.ts")
	gen := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "6", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error:keyint=30:bframes=0",
		"-c:a", "libopus", "-f", "mpegts", file)
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	url := "srt://" + h.addr + "?streamid=#!::r=studio/slt,m=publish"
	pipe := fmt.Sprintf("%q -hide_banner -loglevel error -re -i %q -c copy -f mpegts - | %q -q file://con %q", ffmpeg, file, slt, url)
	ingesttest.Start(t, &sfutest.Buffer{}, "sh", "-c", pipe)
	p := h.Participant("studio", "slt")
	video := ingesttest.TrackOf(t, p, sfu.KindVideo)
	audio := ingesttest.TrackOf(t, p, sfu.KindAudio)
	if video.Codec().Name != sfu.CodecH265 || audio.Codec().Name != sfu.CodecOpus {
		t.Fatalf("codecs %+v %+v", video.Codec(), audio.Codec())
	}
	f := &frames{}
	sub, err := video.Subscribe(f, sfu.SubscribeOptions{QueueSize: 8192})
	ingesttest.Must(t, err)
	defer sub.Close()
	sfutest.WaitFor(t, "60 H.265 frames", 20*time.Second, func() bool { ts, _ := f.snapshot(); return len(ts) >= 60 })
	ts, _ := f.snapshot()
	everyFrame(t, ts)
	if w, hgt := videoSize(video); w != 320 || hgt != 240 {
		t.Errorf("track size %dx%d", w, hgt)
	}
}

func videoSize(tr *sfu.Track) (int, int) {
	for _, st := range tr.Participant().Room().Status().Participants {
		for _, x := range st.Tracks {
			if x.SID == tr.SID() {
				return x.Width, x.Height
			}
		}
	}
	return 0, 0
}

// An srt ingest with a passphrase: the right one publishes as the ingest (identity = its id,
// ingest connected); a wrong or a missing passphrase, or an unknown key with auth keys
// configured, is refused with auth.failed; no secret reaches events or logs.
func TestIngestPassphraseAndKeys(t *testing.T) {
	h := newHarness(t, harnessOptions{auth: auth.Config{Keys: map[string]string{"app": "a-secret-of-at-least-32-characters-long"}}})
	const pass = "correct-horse-battery"
	ing, err := h.Store.Create(ingest.Definition{Type: ingest.TypeSRT, Room: "vault", Passphrase: pass}, time.Now())
	ingesttest.Must(t, err)

	refused := func(name, streamID, extra string, reason string) {
		t.Helper()
		before := h.AuthFailures()
		cmd, exited := ingesttest.Start(t, &sfutest.Buffer{}, "ffmpeg", ffmpegArgs(srtURL(h.addr, streamID, extra), 20)...)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: ffmpeg was not refused", name)
		}
		if cmd.ProcessState.Success() {
			t.Errorf("%s: ffmpeg succeeded", name)
		}
		sfutest.WaitFor(t, name+": auth.failed", 5*time.Second, func() bool { return len(h.AuthFailures()) > len(before) })
		e := h.AuthFailures()[len(before)]
		if e.Reason != reason || e.Protocol != sfu.ProtocolSRT {
			t.Errorf("%s: auth.failed reason %q protocol %q, want %q srt", name, e.Reason, e.Protocol, reason)
		}
	}
	refused("wrong passphrase", "publish:"+ing.StreamKey, "&passphrase=wrong-horse-battery", sfu.AuthPermissionDenied)
	refused("no passphrase", "publish:"+ing.StreamKey, "", sfu.AuthPermissionDenied)
	refused("unknown key", "publish:sk_wrongwrongwrongwrongwrong", "", sfu.AuthUnknownStreamKey)
	refused("room without token", "publish:vault/x", "", sfu.AuthMissingToken)

	ingesttest.Start(t, &sfutest.Buffer{}, "ffmpeg", ffmpegArgs(srtURL(h.addr, "publish:"+ing.StreamKey, "&passphrase="+pass), 30)...)
	p := h.Participant("vault", ing.ID)
	ingesttest.TrackOf(t, p, sfu.KindVideo)
	sfutest.WaitFor(t, "ingest connected", 10*time.Second, func() bool {
		got, _ := h.Store.Get(ing.ID)
		return got.State == ingest.StateConnected
	})
	ingesttest.Must(t, h.Store.Delete(ing.ID))
	h.WaitEvent("participant.left removed", 10*time.Second, func(e sfu.Event) bool {
		return ingesttest.Is(sfu.EventParticipantLeft, ing.ID)(e) && e.Reason == sfu.ReasonRemoved
	})
	h.SecretsAbsent(ing.StreamKey, pass)
}
