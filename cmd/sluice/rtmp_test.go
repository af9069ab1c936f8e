package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/sfu/rtc"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// ffmpegOBS publishes like OBS to url for the given time: libx264 High, keyframe interval 2 s
// at 30 fps, AAC 48 kHz, in real time; bframes 2 or 0. The process ends with the test.
func ffmpegOBS(t *testing.T, url string, seconds, bframes int) (*exec.Cmd, *sfutest.Buffer, <-chan struct{}) {
	t.Helper()
	return startFFmpeg(t, "-re",
		"-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", strconv.Itoa(seconds),
		"-c:v", "libx264", "-profile:v", "high", "-preset", "veryfast", "-bf", strconv.Itoa(bframes),
		"-g", "60", "-pix_fmt", "yuv420p", "-b:v", "1M",
		"-c:a", "aac", "-ar", "48000", "-b:a", "96k",
		"-f", "flv", url)
}

// startFFmpeg runs ffmpeg with args (after -hide_banner -loglevel warning) until it exits or
// the test ends; its output is logged when the test fails.
func startFFmpeg(t *testing.T, args ...string) (*exec.Cmd, *sfutest.Buffer, <-chan struct{}) {
	t.Helper()
	bin := sfutest.RequireTool(t, "ffmpeg")
	cmd := exec.Command(bin, append([]string{"-hide_banner", "-loglevel", "warning"}, args...)...)
	out := &sfutest.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("ffmpeg:\n%s", tail(out.String(), 20))
		}
	})
	return cmd, out, exited
}

// whepViewer is a pion WHEP viewer that depacketizes the H.264 it receives (RFC 6184).
type whepViewer struct {
	pc      *webrtc.PeerConnection
	mu      sync.Mutex
	aus     [][][]byte // access units, in order
	audio   atomic.Int64
	audioMT atomic.Value // string: the audio track's MIME type
	readers sync.WaitGroup
}

func newViewerAPI(t *testing.T) *webrtc.API {
	t.Helper()
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	api, err := rtc.LoopbackAPI(m)
	if err != nil {
		t.Fatal(err)
	}
	return api
}

// playWHEP negotiates a viewer for endpoint, retrying while the room has no publisher yet.
func playWHEP(t *testing.T, endpoint string) *whepViewer {
	t.Helper()
	api := newViewerAPI(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		v := &whepViewer{}
		pc, err := api.NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
			if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
				t.Fatal(err)
			}
		}
		pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
			v.readers.Add(1)
			defer v.readers.Done()
			dec := &rtph264.Decoder{}
			_ = dec.Init()
			for {
				pkt, _, err := tr.ReadRTP()
				if err != nil {
					return
				}
				if tr.Kind() != webrtc.RTPCodecTypeVideo {
					v.audioMT.Store(tr.Codec().MimeType)
					v.audio.Add(1)
					continue
				}
				if au, err := dec.Decode(pkt); err == nil {
					v.mu.Lock()
					v.aus = append(v.aus, au)
					v.mu.Unlock()
				}
			}
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = rtc.Negotiate(ctx, endpoint, "", pc)
		cancel()
		if err == nil {
			v.pc = pc
			t.Cleanup(v.close)
			return v
		}
		_ = pc.Close()
		if time.Now().After(deadline) {
			t.Fatalf("WHEP: %v", err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func (v *whepViewer) close() {
	_ = v.pc.Close()
	v.readers.Wait()
}

func (v *whepViewer) accessUnits() [][][]byte {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([][][]byte(nil), v.aus...)
}

func naluTypes(au [][]byte) []int {
	var out []int
	for _, n := range au {
		if len(n) > 0 {
			out = append(out, int(n[0]&0x1f))
		}
	}
	return out
}

// ffmpeg as OBS (x264 High with B-frames, keyframes every 2 s, AAC 48 kHz) publishes for
// 20 s: a pion WHEP viewer receives H.264 that starts with SPS, PPS and an IDR, and the AAC
// track as Opus through the transcoder; `sluice status` shows both tracks, their codecs and the resolution; the
// clean end of the publish is stream.unpublished with client_disconnected.
func TestOBSStyleRTMPToWHEPAndStatus(t *testing.T) {
	d := startDaemon(t, "")
	_, _, exited := ffmpegOBS(t, fmt.Sprintf("rtmp://127.0.0.1:%d/live/show", d.RTMPPort), 20, 2)
	v := playWHEP(t, d.URL+"/whep/show")
	sfutest.WaitFor(t, "decoded access units", 20*time.Second, func() bool { return len(v.accessUnits()) >= 90 })
	first := naluTypes(v.accessUnits()[0])
	if len(first) < 3 || first[0] != 7 || first[1] != 8 || !containsInt(first, 5) {
		t.Errorf("the first access unit has NAL unit types %v, want SPS (7), PPS (8), then an IDR (5)", first)
	}
	out, err := d.cli("status")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	for _, want := range []string{"show", "rtmp", "H264", "640x360", "aac"} {
		if !strings.Contains(out, want) {
			t.Errorf("status does not show %q:\n%s", want, out)
		}
	}
	if strings.Contains(d.logs.String(), "type=track.subscription_failed") {
		t.Error("a track was refused to the viewer")
	}
	select {
	case <-exited:
	case <-time.After(40 * time.Second):
		t.Fatal("ffmpeg did not finish its 20 s")
	}
	n := len(v.accessUnits())
	if n < 300 {
		t.Errorf("the viewer decoded %d access units in 20 s of 30 fps", n)
	}
	t.Logf("the WHEP viewer depacketized %d access units", n)
	// Opus frames are 20 ms: 20 s of audio is 1,000 packets; allow for the transcoder's start.
	if a, mt := v.audio.Load(), v.audioMT.Load(); a < 600 || mt != webrtc.MimeTypeOpus {
		t.Errorf("the viewer received %d audio packets of %v, want ≥ 600 of Opus", a, mt)
	}
	sfutest.WaitFor(t, "the clean end", 10*time.Second, func() bool {
		return strings.Contains(d.logs.String(), "type=stream.unpublished seq=") &&
			strings.Contains(d.logs.String(), "reason=client_disconnected")
	})
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Headless Chromium plays an ffmpeg RTMP publish (no B-frames) over WHEP and decodes it.
func TestChromiumPlaysRTMP(t *testing.T) {
	requireChromium(t)
	d := startDaemon(t, "")
	ffmpegOBS(t, fmt.Sprintf("rtmp://127.0.0.1:%d/live/tv", d.RTMPPort), 60, 0)
	sfutest.WaitFor(t, "the publisher", 20*time.Second, func() bool {
		out, err := d.cli("status")
		return err == nil && strings.Contains(out, "H264")
	})
	ps := newPageServer(t)
	ps.openPage(t, "play.html", "view", url.Values{"whep": {d.URL + "/whep/tv"}})
	first := ps.waitReport(t, "view", "decoded frames", 45*time.Second, func(r map[string]any) bool {
		return num(r, "framesDecoded") > 60 && num(r, "frameWidth") == 640
	})
	time.Sleep(2 * time.Second)
	later := ps.report("view")
	if num(later, "framesDecoded") <= num(first, "framesDecoded") {
		t.Fatalf("playback stalled: %v then %v", first, later)
	}
	if later["videoCodec"] != "video/H264" {
		t.Errorf("video codec %v", later["videoCodec"])
	}
}

// `sluice ingest create rtmp` gives a stream key that ffmpeg publishes with; the ingest shows
// connected; `sluice ingest delete` ends the live session.
func TestIngestStreamKeyEndToEnd(t *testing.T) {
	d := startDaemon(t, "")
	out, err := d.cli("ingest", "create", "rtmp", "--room", "studio", "--identity", "obs", "-o", "json")
	if err != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	var v ingest.View
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	server, key := v.Publish["rtmp_server"], v.Publish["stream_key"]
	if server != fmt.Sprintf("rtmp://127.0.0.1:%d/live", d.RTMPPort) || !strings.HasPrefix(key, "sk_") {
		t.Fatalf("publish settings %v", v.Publish)
	}
	_, ffout, exited := ffmpegOBS(t, server+"/"+key, 120, 0)
	sfutest.WaitFor(t, "the ingest connected", 20*time.Second, func() bool {
		out, _ := d.cli("ingest", "list")
		return strings.Contains(out, "connected")
	})
	sfutest.WaitFor(t, "the stream in the status", 20*time.Second, func() bool {
		out, _ := d.cli("status")
		return strings.Contains(out, "obs") && strings.Contains(out, "H264")
	})
	if out, err := d.cli("ingest", "delete", v.ID); err != nil {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("ffmpeg still publishes after the ingest was deleted:\n%s", ffout.String())
	}
	if strings.Contains(d.logs.String(), key) {
		t.Error("the stream key reached the daemon's log")
	}
	logs := d.logs.String()
	if !strings.Contains(logs, "type=participant.left") || !strings.Contains(logs, "reason=removed") {
		t.Error("no participant.left with reason removed")
	}
}
