package srt

import (
	"os"
	"testing"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/sluice-media/sluice/ingest/ingesttest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// dialPublish sends testdata/h264aac.ts (2 s of H.264 and AAC) over a gosrt client with
// streamID, paced a 1316-byte message a millisecond.
func dialPublish(t *testing.T, addr, streamID, passphrase string) (gosrt.Conn, error) {
	t.Helper()
	cfg := gosrt.DefaultConfig()
	cfg.StreamId = streamID
	cfg.Passphrase = passphrase
	return gosrt.Dial("srt", addr, cfg)
}

func sendFile(t *testing.T, c gosrt.Conn) {
	t.Helper()
	data, err := os.ReadFile("testdata/h264aac.ts")
	ingesttest.Must(t, err)
	for off := 0; off < len(data); off += 1316 {
		if _, err := c.Write(data[off:min(off+1316, len(data))]); err != nil {
			t.Fatalf("write: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
}

// A gosrt client publishes MPEG-TS in open mode with the access-control stream id: the
// participant is of kind srt with H.264 and AAC tracks and stream.publishing says srt; closing
// the connection ends the participant.
func TestGoClientPublish(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	c, err := dialPublish(t, h.addr, "#!::r=studio,u=go,m=publish", "")
	ingesttest.Must(t, err)
	sendFile(t, c)
	p := h.Participant("studio", "go")
	if p.Kind() != sfu.ParticipantSRT {
		t.Errorf("kind %q", p.Kind())
	}
	video := ingesttest.TrackOf(t, p, sfu.KindVideo)
	audio := ingesttest.TrackOf(t, p, sfu.KindAudio)
	if video.Codec().Name != sfu.CodecH264 || audio.Codec().Name != sfu.CodecAAC {
		t.Errorf("codecs %+v %+v", video.Codec(), audio.Codec())
	}
	e := h.WaitEvent("stream.publishing", 10*time.Second, ingesttest.Is(sfu.EventStreamPublishing, "go"))
	if e.Stream.Protocol != sfu.ProtocolSRT {
		t.Errorf("protocol %q", e.Stream.Protocol)
	}
	_ = c.Close()
	h.WaitEvent("participant.left", 10*time.Second, ingesttest.Is(sfu.EventParticipantLeft, "go"))
}

// A malformed stream id and an encrypted connection nobody has a passphrase for are refused
// with auth.failed.
func TestGoClientRefused(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	if c, err := dialPublish(t, h.addr, "nonsense", ""); err == nil {
		_ = c.Close()
		t.Error("a malformed stream id was accepted")
	}
	if c, err := dialPublish(t, h.addr, "publish:room", "a-passphrase-nobody-knows"); err == nil {
		_ = c.Close()
		t.Error("an encrypted connection without a configured passphrase was accepted")
	}
	sfutest.WaitFor(t, "two auth.failed", 5*time.Second, func() bool { return len(h.AuthFailures()) == 2 })
	h.SecretsAbsent("a-passphrase-nobody-knows")
}
