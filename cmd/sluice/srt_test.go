package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/ingest/ingesttest"
	"github.com/sluice-media/sluice/recorder"
	"github.com/sluice-media/sluice/recorder/rectest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// The SRT done-means of the daemon: `sluice ingest create srt` prints the URL OBS takes, and
// ffmpeg publishes H.264 and AAC with it (its libsrt, AES with the ingest's passphrase);
// srt-live-transmit pushes a TS file into another room. A pion WHEP viewer decodes the
// srt-live-transmit room's H.264, an ffmpeg SRT reader decodes what read:studio plays, and a
// recording of the ffmpeg publisher decodes with ffprobe. A wrong passphrase and an unknown key
// are refused with auth.failed (protocol srt).
func TestSRTEndToEnd(t *testing.T) {
	srtPort, _ := sfutest.FreeUDPPair(t)
	d := startDaemon(t, fmt.Sprintf("srt: { listen: \"127.0.0.1:%d\" }\n", srtPort))
	const pass = "correct-horse-battery"
	out, err := d.cli("ingest", "create", "srt", "--room", "studio", "--identity", "obs", "--passphrase", pass, "-o", "json")
	if err != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	var v ingest.View
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want := fmt.Sprintf("srt://127.0.0.1:%d?streamid=publish:%s&passphrase=%s", srtPort, v.StreamKey, pass)
	if v.Publish["srt_url"] != want {
		t.Fatalf("srt_url %q, want %q", v.Publish["srt_url"], want)
	}
	text, err := d.cli("ingest", "show", v.ID)
	if err != nil || !strings.Contains(text, "Server:     "+want) {
		t.Errorf("ingest show does not give OBS the URL: %v\n%s", err, text)
	}

	// Refusals first: a wrong passphrase, an unknown key.
	base := fmt.Sprintf("srt://127.0.0.1:%d", srtPort)
	for _, u := range []string{
		base + "?streamid=publish:" + v.StreamKey + "&passphrase=wrong-horse-battery",
		base + "?streamid=publish:sk_unknownunknownunknownunk",
	} {
		_, exited := ingesttest.Start(t, &sfutest.Buffer{}, "ffmpeg", srtFFmpegArgs(u, 5)...)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			t.Fatal("ffmpeg was not refused")
		}
	}
	sfutest.WaitFor(t, "two auth.failed over srt", 10*time.Second, func() bool {
		n := 0
		for _, e := range d.loggedEvents() {
			if e.Type == sfu.EventAuthFailed && e.Protocol == sfu.ProtocolSRT {
				n++
			}
		}
		return n >= 2
	})

	ingesttest.Start(t, &sfutest.Buffer{}, "ffmpeg", srtFFmpegArgs(v.Publish["srt_url"], 60)...)
	file := filepath.Join(t.TempDir(), "tape.ts")
	gen := exec.Command(sfutest.RequireTool(t, "ffmpeg"), "-hide_banner", "-loglevel", "error", //nolint:gosec // the test's tool
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i", "sine=frequency=220:sample_rate=48000",
		"-t", "30", "-c:v", "libx264", "-profile:v", "baseline", "-preset", "veryfast", "-g", "30", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-f", "mpegts", file)
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	slt := sfutest.RequireTool(t, "srt-live-transmit")
	pipe := fmt.Sprintf("%q -hide_banner -loglevel error -re -i %q -c copy -f mpegts - | %q -q file://con %q",
		sfutest.RequireTool(t, "ffmpeg"), file, slt, base+"?streamid=publish:tape/slt")
	ingesttest.Start(t, &sfutest.Buffer{}, "sh", "-c", pipe)
	d.waitPublisher(t, "studio", 2)
	d.waitPublisher(t, "tape", 2)

	viewer := playWHEP(t, d.URL+"/whep/tape")
	out, err = d.cli("record", "start", "--room", "studio", "--participant", "obs", "-o", "json")
	if err != nil {
		t.Fatalf("record start: %v\n%s", err, out)
	}
	rec := startedRecording(t, out)

	reader := &sfutest.Buffer{}
	_, exited := ingesttest.Start(t, reader, "ffmpeg", "-hide_banner", "-loglevel", "error",
		"-i", base+"?streamid=read:studio", "-map", "0:v", "-map", "0:a", "-frames:v", "150", "-f", "framecrc", "-")
	select {
	case <-exited:
	case <-time.After(40 * time.Second):
		t.Fatal("the ffmpeg SRT reader did not decode 150 frames in 40 s")
	}
	video, audio := 0, 0
	for _, line := range strings.Split(reader.String(), "\n") {
		switch {
		case strings.HasPrefix(line, "0,"):
			video++
		case strings.HasPrefix(line, "1,"):
			audio++
		}
	}
	if video != 150 || audio == 0 {
		t.Errorf("the ffmpeg SRT reader decoded %d video frames (want 150) and %d audio frames", video, audio)
	}
	aus := viewer.accessUnits()
	if len(aus) < 60 {
		t.Errorf("the WHEP viewer got %d H.264 access units", len(aus))
	} else if types := naluTypes(aus[0]); !containsInt(types, 5) {
		t.Errorf("the WHEP viewer's first access unit is no keyframe: NAL types %v", types)
	} else if n := decodedFrames(t, aus); n < len(aus)-1 {
		t.Errorf("ffmpeg decoded %d frames of the WHEP viewer's %d access units", n, len(aus))
	}
	if _, err := d.cli("record", "stop", rec); err != nil {
		t.Fatalf("record stop: %v", err)
	}
	r := d.waitRecording(t, rec, 15*time.Second, func(r recorder.Recording) bool { return r.Status == recorder.StatusComplete })
	if len(r.Files) != 1 {
		t.Fatalf("recording files %+v", r.Files)
	}
	rectest.Verify(t, filepath.Join(d.recordingsDir(), filepath.FromSlash(r.Files[0].Path)), 0, "h264", "aac")
	if strings.Contains(d.logs.String(), v.StreamKey) || strings.Contains(d.logs.String(), pass) {
		t.Error("the stream key or the passphrase reached the daemon's log")
	}
}

// srtFFmpegArgs publishes H.264 (x264 High, keyframe every 2 s) and AAC in MPEG-TS to url
// in real time, as OBS does over SRT.
func srtFFmpegArgs(url string, seconds int) []string {
	return []string{"-hide_banner", "-loglevel", "warning", "-re",
		"-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", strconv.Itoa(seconds),
		"-c:v", "libx264", "-profile:v", "high", "-preset", "veryfast", "-g", "60", "-pix_fmt", "yuv420p", "-b:v", "1M",
		"-c:a", "aac", "-ar", "48000", "-b:a", "96k", "-f", "mpegts", url}
}

// SRT play of WebRTC publishers: Opus passes as it is, or goes to AAC through the transcoder
// with audio=aac; VP8 goes to H.264. What the readers receive decodes (ffprobe) in the codecs
// asked for.
func TestSRTPlaysWebRTC(t *testing.T) {
	srtPort, _ := sfutest.FreeUDPPair(t)
	d := startDaemon(t, fmt.Sprintf("srt: { listen: \"127.0.0.1:%d\" }\n", srtPort))
	video, audio := rectest.H264Opus(t, 31, 0)
	stop := rectest.WHIPPublish(t, d.URL+"/whip/show", 30*time.Second, video, audio)
	defer stop()
	publishVP8(t, d.URL+"/whip/cam")
	d.waitPublisher(t, "show", 2)
	d.waitPublisher(t, "cam", 1)
	base := fmt.Sprintf("srt://127.0.0.1:%d?streamid=", srtPort)
	for _, c := range []struct {
		streamID string
		codecs   string
	}{
		{"read:show", "h264,opus"},
		{"read:show?audio=aac", "h264,aac"},
		{"#!::r=cam,m=request", "h264"},
	} {
		file := filepath.Join(t.TempDir(), "got.ts")
		out := &sfutest.Buffer{}
		_, exited := ingesttest.Start(t, out, "ffmpeg", "-hide_banner", "-loglevel", "error",
			"-i", base+c.streamID, "-map", "0", "-c", "copy", "-t", "3", "-f", "mpegts", file)
		select {
		case <-exited:
		case <-time.After(40 * time.Second):
			t.Fatalf("%s: the ffmpeg reader did not end in 40 s", c.streamID)
		}
		probe, err := exec.Command(sfutest.RequireTool(t, "ffprobe"), "-v", "error", "-show_entries", "stream=codec_name", //nolint:gosec // the test's tool
			"-of", "csv=p=0", file).CombinedOutput()
		streams := strings.Fields(string(probe))
		if n := len(streams) / 2; len(streams)%2 == 0 && slices.Equal(streams[:n], streams[n:]) {
			streams = streams[:n] // ffprobe lists the program's streams, then the streams
		}
		if got := strings.Join(streams, ","); err != nil || got != c.codecs {
			t.Errorf("%s: streams %q (%v), want %s\nffmpeg: %s", c.streamID, got, err, c.codecs, out.String())
			continue
		}
		if e := rectest.DecodeErrors(t, file); e != "" {
			t.Errorf("%s: decode errors:\n%s", c.streamID, e)
		}
	}
}

// decodedFrames decodes access units (H.264 NAL units) with ffmpeg and counts the pictures.
func decodedFrames(t *testing.T, aus [][][]byte) int {
	t.Helper()
	var annexB bytes.Buffer
	for _, au := range aus {
		for _, n := range au {
			annexB.Write([]byte{0, 0, 0, 1})
			annexB.Write(n)
		}
	}
	path := filepath.Join(t.TempDir(), "whep.h264")
	if err := os.WriteFile(path, annexB.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sfutest.RequireTool(t, "ffmpeg"), "-hide_banner", "-loglevel", "error", "-xerror", //nolint:gosec // a test file
		"-f", "h264", "-i", path, "-f", "framecrc", "-").CombinedOutput()
	if err != nil {
		t.Fatalf("decoding the WHEP viewer's H.264: %v\n%s", err, out)
	}
	n := 0
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "0,") {
			n++
		}
	}
	return n
}
