package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/ingest/rtsp/rtsptest"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// ingestState polls `sluice ingest show` until the ingest reaches state.
func (d *daemonProc) waitIngest(t *testing.T, id, state string, timeout time.Duration) ingest.View {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out, err := d.cli("ingest", "show", id, "-o", "json")
		var v ingest.View
		if err == nil && json.Unmarshal([]byte(out), &v) == nil && v.State == state {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("ingest %s not %s after %v: %v %s", id, state, timeout, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// decodeRTSP plays url with ffmpeg for a few seconds and fails on any decoding error.
func decodeRTSP(t *testing.T, rawURL string) {
	t.Helper()
	ffmpeg := sfutest.RequireTool(t, "ffmpeg")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, ffmpeg, "-hide_banner", "-v", "error", "-rtsp_transport", "tcp",
		"-i", rawURL, "-t", "3", "-f", "null", "-").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("ffmpeg play %s: %v\n%s", rawURL, err, out)
	}
}

// An IP camera (the emulator: H.264 from libx264 and G.711, digest auth) added with
// `sluice ingest create rtsp` is pulled; headless Chromium plays it over WHEP and decodes its
// video and audio; ffmpeg plays it back over RTSP; the camera comes back with the daemon after
// a restart, and its password appears nowhere.
func TestCameraIngestToChromium(t *testing.T) {
	requireChromium(t)
	const pass = "e2e-Camera-pw"
	cam := rtsptest.NewCamera(t, rtsptest.CameraOptions{User: "admin", Pass: pass})
	d := startDaemon(t, "")
	out, err := d.cli("ingest", "create", "rtsp", "--room", "door", "--url", cam.URL("admin", pass), "--transport", "auto", "-o", "json")
	if err != nil {
		t.Fatalf("ingest create: %v\n%s", err, out)
	}
	var created ingest.View
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if strings.Contains(out, pass) {
		t.Errorf("the create output shows the camera password: %s", out)
	}
	d.waitIngest(t, created.ID, ingest.StateConnected, 30*time.Second)

	ps := newPageServer(t)
	ps.openPage(t, "play.html", "cam", url.Values{"whep": {d.URL + "/whep/door"}})
	first := ps.waitReport(t, "cam", "decoded camera video and audio", 40*time.Second, func(r map[string]any) bool {
		return num(r, "framesDecoded") > 30 && num(r, "frameWidth") == 320 && num(r, "totalSamplesReceived") > 0
	})
	time.Sleep(2 * time.Second)
	later := ps.report("cam")
	if num(later, "framesDecoded") <= num(first, "framesDecoded") {
		t.Fatalf("playback stalled: %v then %v", first, later)
	}
	if later["videoCodec"] != "video/H264" || later["audioCodec"] != "audio/PCMU" {
		t.Errorf("codecs %v %v", later["videoCodec"], later["audioCodec"])
	}
	t.Logf("chromium: %v frames decoded, %vx%v, %v audio samples", later["framesDecoded"], later["frameWidth"], later["frameHeight"], later["totalSamplesReceived"])

	decodeRTSP(t, fmt.Sprintf("rtsp://127.0.0.1:%d/door", d.RTSPPort))

	status, err := d.cli("status")
	if err != nil || !strings.Contains(status, "320x240") {
		t.Errorf("status: %v\n%s", err, status)
	}
	d.stop()
	d.start()
	d.waitIngest(t, created.ID, ingest.StateConnected, 30*time.Second)
	list, _ := d.cli("ingest", "list")
	for _, where := range []string{d.logs.String(), list, status} {
		if strings.Contains(where, pass) {
			t.Fatal("the camera password leaked into the output or logs")
		}
	}
}

// Cameras in the config file's ingests: list are pulled at start; ffmpeg pushes to the RTSP
// port and the room is played back.
func TestCameraFromConfigAndPush(t *testing.T) {
	cam := rtsptest.NewCamera(t, rtsptest.CameraOptions{Audio: "aac"})
	d := startDaemon(t, fmt.Sprintf(`ingests:
  - { id: yard-cam, type: rtsp_pull, room: yard, url: %q, transport: tcp }
`, cam.URL("", "")))
	v := d.waitIngest(t, "yard-cam", ingest.StateConnected, 30*time.Second)
	if !v.FromConfig {
		t.Error("the config's camera is not marked from_config")
	}
	decodeRTSP(t, fmt.Sprintf("rtsp://127.0.0.1:%d/yard/yard-cam", d.RTSPPort))

	ffmpeg := sfutest.RequireTool(t, "ffmpeg")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	push := exec.CommandContext(ctx, ffmpeg, "-hide_banner", "-v", "error", "-re",
		"-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "8", "-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "baseline", "-pix_fmt", "yuv420p", "-g", "25",
		"-c:a", "aac", "-f", "rtsp", "-rtsp_transport", "udp", fmt.Sprintf("rtsp://127.0.0.1:%d/studio/ff", d.RTSPPort))
	if err := push.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = push.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _ := d.cli("rooms", "show", "studio")
		if strings.Contains(out, "ff") && strings.Contains(out, "aac") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the push did not show up:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	decodeRTSP(t, fmt.Sprintf("rtsp://127.0.0.1:%d/studio", d.RTSPPort))
}
