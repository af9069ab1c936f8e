package srt

import (
	"bufio"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/ingest/ingesttest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// tsReader is a gosrt reader that demuxes the MPEG-TS it gets and counts the access units.
type tsReader struct {
	conn          gosrt.Conn
	video, audio  atomic.Int64
	keyframes     atomic.Int64
	videoCodec    atomic.Value // string
	done          chan struct{}
	err           error
	firstWasKey   atomic.Bool
	sawFirstVideo atomic.Bool
	lastDTS       int64        // the reader goroutine's
	backwards     atomic.Int64 // video decode times that went back
}

// dialRead connects a gosrt reader with streamID and demuxes what it gets until it is closed.
func dialRead(t *testing.T, addr, streamID, passphrase string) (*tsReader, error) {
	t.Helper()
	cfg := gosrt.DefaultConfig()
	cfg.StreamId = streamID
	cfg.Passphrase = passphrase
	c, err := gosrt.Dial("srt", addr, cfg)
	if err != nil {
		return nil, err
	}
	r := &tsReader{conn: c, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = r.read()
	}()
	t.Cleanup(func() { _ = c.Close(); <-r.done })
	return r, nil
}

func (r *tsReader) read() error {
	rd := &mpegts.Reader{R: r.conn}
	if err := rd.Initialize(); err != nil {
		return err
	}
	onVideo := func(codec string, dts int64, key bool) {
		if dts < r.lastDTS {
			r.backwards.Add(1)
		}
		r.lastDTS = dts
		r.videoCodec.Store(codec)
		if !r.sawFirstVideo.Swap(true) {
			r.firstWasKey.Store(key)
		}
		if key {
			r.keyframes.Add(1)
		}
		r.video.Add(1)
	}
	for _, tr := range rd.Tracks() {
		switch tr.Codec.(type) {
		case *mpegts.CodecH264:
			rd.OnDataH264(tr, func(_, dts int64, au [][]byte) error {
				onVideo("h264", dts, hasNALU(au, 0x1f, 5))
				return nil
			})
		case *mpegts.CodecH265:
			rd.OnDataH265(tr, func(_, dts int64, au [][]byte) error {
				onVideo("h265", dts, hasNALU(au, 0x7e, 19<<1) || hasNALU(au, 0x7e, 20<<1))
				return nil
			})
		case *mpegts.CodecMPEG4Audio:
			rd.OnDataMPEG4Audio(tr, func(_ int64, aus [][]byte) error { r.audio.Add(int64(len(aus))); return nil })
		case *mpegts.CodecOpus:
			rd.OnDataOpus(tr, func(_ int64, pkts [][]byte) error { r.audio.Add(int64(len(pkts))); return nil })
		}
	}
	for {
		if err := rd.Read(); err != nil {
			return err
		}
	}
}

func hasNALU(au [][]byte, mask, typ byte) bool {
	for _, n := range au {
		if len(n) > 0 && n[0]&mask == typ {
			return true
		}
	}
	return false
}

// A gosrt reader of read:studio waits for the room's main publisher, then gets MPEG-TS with
// H.264 from a keyframe and AAC: it joins as a participant of kind srt, its stream is reported
// with direction play and protocol srt, it follows the publisher across a reconnect, and
// closing the connection ends the participant.
func TestGoClientPlay(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	r, err := dialRead(t, h.addr, "#!::r=studio,m=request,u=viewer", "")
	ingesttest.Must(t, err)
	viewer := h.Participant("studio", "viewer")
	if viewer.Kind() != sfu.ParticipantSRT {
		t.Errorf("reader kind %q", viewer.Kind())
	}
	c, err := dialPublish(t, h.addr, "publish:studio/cam", "")
	ingesttest.Must(t, err)
	sendFile(t, c)
	sfutest.WaitFor(t, "50 video frames and audio", 20*time.Second, func() bool { return r.video.Load() >= 50 && r.audio.Load() >= 50 })
	if !r.firstWasKey.Load() || r.videoCodec.Load() != "h264" {
		t.Errorf("first video frame a keyframe: %v, codec %v", r.firstWasKey.Load(), r.videoCodec.Load())
	}
	e := h.WaitEvent("the reader's stream.playing", 10*time.Second, ingesttest.Is(sfu.EventStreamPlaying, "viewer"))
	if e.Stream.Protocol != sfu.ProtocolSRT || e.Stream.Direction != sfu.DirectionPlay {
		t.Errorf("stream %+v", e.Stream)
	}
	// The publisher reconnects: the reader follows it on the same connection, its times running on.
	_ = c.Close()
	h.WaitEvent("the publisher left", 10*time.Second, ingesttest.Is(sfu.EventParticipantLeft, "cam"))
	before := r.video.Load()
	c2, err := dialPublish(t, h.addr, "publish:studio/cam", "")
	ingesttest.Must(t, err)
	sendFile(t, c2)
	sfutest.WaitFor(t, "50 more video frames", 20*time.Second, func() bool { return r.video.Load() >= before+50 })
	if n := r.backwards.Load(); n > 0 {
		t.Errorf("%d video decode times went back", n)
	}
	_ = c2.Close()
	_ = r.conn.Close()
	h.WaitEvent("the reader left", 10*time.Second, ingesttest.Is(sfu.EventParticipantLeft, "viewer"))
}

// With auth keys: a reader needs a token with the subscribe grant for the room; a stream key,
// a token for another room or one without the grant are refused with auth.failed, and a
// reader named by its token reads the identity its stream id names.
func TestPlayKeys(t *testing.T) {
	const secret = "a-secret-of-at-least-32-characters-long"
	h := newHarness(t, harnessOptions{auth: auth.Config{Keys: map[string]string{"app": secret}}})
	ing, err := h.Store.Create(ingest.Definition{Type: ingest.TypeSRT, Room: "studio", Identity: "cam"}, time.Now())
	ingesttest.Must(t, err)
	token := func(room string, g auth.Grants, identity string) string {
		g.Room = room
		tok, err := auth.Sign("app", secret, auth.Claims{Identity: identity, Grants: g, ExpiresAt: time.Now().Add(time.Hour).Unix()})
		ingesttest.Must(t, err)
		return tok
	}
	for _, c := range []struct{ name, streamID, reason string }{
		{"no token", "read:studio", sfu.AuthMissingToken},
		{"stream key", "read:studio?key=" + ing.StreamKey, sfu.AuthPermissionDenied},
		{"other room", "read:studio?token=" + token("other", auth.Grants{Subscribe: true}, "v"), sfu.AuthPermissionDenied},
		{"no subscribe grant", "read:studio?token=" + token("studio", auth.Grants{Publish: true}, "v"), sfu.AuthPermissionDenied},
	} {
		before := len(h.AuthFailures())
		if r, err := dialRead(t, h.addr, c.streamID, ""); err == nil {
			_ = r.conn.Close()
			t.Errorf("%s: accepted", c.name)
			continue
		}
		sfutest.WaitFor(t, c.name+": auth.failed", 5*time.Second, func() bool { return len(h.AuthFailures()) > before })
		if e := h.AuthFailures()[before]; e.Reason != c.reason || e.Protocol != sfu.ProtocolSRT {
			t.Errorf("%s: auth.failed %q over %q, want %q", c.name, e.Reason, e.Protocol, c.reason)
		}
	}
	pub, err := dialPublish(t, h.addr, "publish:"+ing.StreamKey, "")
	ingesttest.Must(t, err)
	defer pub.Close()
	r, err := dialRead(t, h.addr, "#!::r=studio/cam,m=request,s="+token("studio", auth.Grants{Subscribe: true}, "alice"), "")
	ingesttest.Must(t, err)
	alice := h.Participant("studio", "alice")
	if alice.Kind() != sfu.ParticipantSRT {
		t.Errorf("kind %q", alice.Kind())
	}
	sendFile(t, pub)
	sfutest.WaitFor(t, "video", 20*time.Second, func() bool { return r.video.Load() >= 10 })
	h.SecretsAbsent(ing.StreamKey, secret)
}

// ffmpeg publishes over SRT, and an ffmpeg SRT reader (its libsrt) decodes what read:studio/ff
// plays: every decoded frame is counted.
func TestFFmpegReadsSRT(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ingesttest.Start(t, &sfutest.Buffer{}, "ffmpeg", ffmpegArgs(srtURL(h.addr, "publish:studio/ff", ""), 20)...)
	h.Participant("studio", "ff")
	frames := decodeSRT(t, srtURL(h.addr, "read:studio/ff", ""), 90)
	if frames < 90 {
		t.Fatalf("ffmpeg decoded %d video frames, want 90", frames)
	}
}

// decodeSRT runs an ffmpeg SRT reader that decodes n video frames (and the audio) of url and
// returns how many video frames it decoded (framecrc lines of stream 0).
func decodeSRT(t *testing.T, url string, n int) int {
	t.Helper()
	out := &sfutest.Buffer{}
	_, exited := ingesttest.Start(t, out, "ffmpeg", "-hide_banner", "-loglevel", "error", "-i", url,
		"-map", "0:v", "-frames:v", strconv.Itoa(n), "-f", "framecrc", "-")
	select {
	case <-exited:
	case <-time.After(40 * time.Second):
		t.Fatalf("the ffmpeg reader did not decode %d frames in 40 s:\n%s", n, out.String())
	}
	count := 0
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "0,") {
			count++
		}
	}
	return count
}
