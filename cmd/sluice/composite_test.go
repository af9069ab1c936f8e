package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/egress/egresstest"
	"github.com/sluice-media/sluice/recorder"
	"github.com/sluice-media/sluice/recorder/rectest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// colourSource pushes a plain colour and a tone with ffmpeg (x264, AAC) to url in format
// (flv for RTMP, rtsp for an RTSP push).
func colourSource(t *testing.T, url, format, colour string, freq, seconds int) (stop func()) {
	t.Helper()
	bin := sfutest.RequireTool(t, "ffmpeg")
	args := []string{"-hide_banner", "-loglevel", "warning", "-re",
		"-f", "lavfi", "-i", "color=c=" + colour + ":size=320x180:rate=30",
		"-f", "lavfi", "-i", fmt.Sprintf("sine=frequency=%d:sample_rate=48000", freq),
		"-t", strconv.Itoa(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-profile:v", "baseline",
		"-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ar", "48000", "-b:a", "64k"}
	if format == "rtsp" {
		args = append(args, "-rtsp_transport", "tcp")
	}
	cmd := exec.Command(bin, append(args, "-f", format, url)...) //nolint:gosec // the test's ffmpeg
	out := &sfutest.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop = func() {
		_ = cmd.Process.Kill()
		<-exited
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("ffmpeg %s %s:\n%s", format, colour, tail(out.String(), 10))
		}
	})
	return stop
}

// waitEvent waits for the first logged event after seq that match accepts.
func (d *daemonProc) waitEvent(t *testing.T, what string, timeout time.Duration, match func(e *sfu.Event) bool) sfu.Event {
	t.Helper()
	var found sfu.Event
	sfutest.WaitFor(t, what, timeout, func() bool {
		for _, e := range d.loggedEvents() {
			if match(&e) {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

// Three publishers of three kinds in one room (ffmpeg over RTMP in red with 440 Hz, a pion WHIP
// peer in green with 660 Hz, ffmpeg pushing RTSP in blue with 880 Hz), broadcast with the grid
// layout to nginx-rtmp and recorded: both outputs show the three colours in their tiles and
// carry the three tones; when the RTMP publisher leaves, the layout changes to two within 2 s
// (recording.updated and broadcast.updated, reason layout_changed), the picture re-tiles, and
// each output is one continuous stream.
func TestCompositeGridBroadcastAndRecording(t *testing.T) {
	egresstest.RequireNginx(t)
	platform := egresstest.StartPlatform(t, egresstest.PlatformOptions{})
	d := startDaemon(t, "")
	publishing := func(n int) func(e *sfu.Event) bool {
		return func(e *sfu.Event) bool {
			count := 0
			for _, ev := range d.loggedEvents() {
				if ev.Type == sfu.EventStreamPublishing && ev.Room != nil && ev.Room.Name == "show" {
					count++
				}
			}
			return count >= n
		}
	}
	stopRed := colourSource(t, fmt.Sprintf("rtmp://127.0.0.1:%d/live/show", d.RTMPPort), "flv", "red", 440, 60)
	d.waitEvent(t, "the RTMP publisher", 20*time.Second, publishing(1))
	video, audio := rectest.ColourH264Opus(t, 60, "green", 660)
	stopGreen := rectest.WHIPPublish(t, d.URL+"/whip/show", 60*time.Second, video, audio)
	t.Cleanup(stopGreen)
	d.waitEvent(t, "the WHIP publisher", 20*time.Second, publishing(2))
	colourSource(t, fmt.Sprintf("rtsp://127.0.0.1:%d/show", d.RTSPPort), "rtsp", "blue", 880, 60)
	d.waitEvent(t, "the RTSP publisher", 20*time.Second, publishing(3))

	format := []string{"--layout", "grid", "--size", "640x360", "--fps", "15", "--video-bitrate", "800", "-o", "json"}
	out, err := d.cli(append([]string{"broadcast", "start", "--room", "show", "--url", platform.URL("show")}, format...)...)
	if err != nil {
		t.Fatalf("broadcast start: %v\n%s", err, out)
	}
	var bc sfu.BroadcastInfo
	if err := json.Unmarshal([]byte(out), &bc); err != nil || bc.Layout != "grid" || len(bc.Participants) != 3 {
		t.Fatalf("broadcast start: %v\n%s", err, out)
	}
	out, err = d.cli(append([]string{"record", "start", "--room", "show"}, format...)...)
	if err != nil {
		t.Fatalf("record start: %v\n%s", err, out)
	}
	var rec recorder.Recording
	if err := json.Unmarshal([]byte(out), &rec); err != nil || rec.Layout != "grid" {
		t.Fatalf("record start: %v (layout %q)\n%q", err, rec.Layout, out)
	}
	d.waitEvent(t, "the broadcast to go live", 20*time.Second, func(e *sfu.Event) bool {
		return e.Type == sfu.EventBroadcastStarted && e.Broadcast != nil && e.Broadcast.ID == bc.ID
	})
	time.Sleep(8 * time.Second)

	stopRed()
	left := d.waitEvent(t, "the RTMP publisher's leave", 15*time.Second, func(e *sfu.Event) bool {
		return e.Type == sfu.EventParticipantLeft && e.Participant != nil && e.Participant.Kind == sfu.ParticipantRTMP
	})
	for _, kind := range []string{"recording", "broadcast"} {
		ev := d.waitEvent(t, kind+" layout change", 10*time.Second, func(e *sfu.Event) bool {
			if e.Reason != "layout_changed" || e.Seq < left.Seq {
				return false
			}
			if kind == "recording" {
				return e.Type == sfu.EventRecordingUpdated && e.Recording != nil && len(e.Recording.Participants) == 2
			}
			return e.Type == sfu.EventBroadcastUpdated && e.Broadcast != nil && len(e.Broadcast.Participants) == 2
		})
		if lag := ev.Time.Sub(left.Time); lag > 2*time.Second {
			t.Errorf("the %s's layout changed %v after the participant left, want within 2 s", kind, lag)
		} else {
			t.Logf("%s re-tiled %v after the participant left", kind, lag.Round(time.Millisecond))
		}
	}
	time.Sleep(6 * time.Second)
	if out, err := d.cli("record", "stop", rec.ID); err != nil {
		t.Fatalf("record stop: %v\n%s", err, out)
	}
	if out, err := d.cli("broadcast", "stop", bc.ID); err != nil {
		t.Fatalf("broadcast stop: %v\n%s", err, out)
	}
	out, err = d.cli("record", "show", rec.ID, "-o", "json")
	if err != nil {
		t.Fatalf("record show: %v\n%s", err, out)
	}
	if err := json.Unmarshal([]byte(out), &rec); err != nil || len(rec.Files) != 1 {
		t.Fatalf("want one file of the composite recording: %v\n%s", err, out)
	}
	recorded := filepath.Join(d.dir, "data", "recordings", filepath.FromSlash(rec.Files[0].Path))
	platformFiles := platform.Recordings()
	if len(platformFiles) != 1 {
		t.Fatalf("the platform has %d streams, want one continuous one: %v", len(platformFiles), platformFiles)
	}
	for name, file := range map[string]string{"recording": recorded, "platform": platformFiles[0]} {
		p := egresstest.ProbeFile(t, file)
		if p.Video != "h264" || p.Audio != "aac" || p.Width != 640 || p.Height != 360 {
			t.Errorf("%s: %+v", name, p)
		}
		checkContinuous(t, name, file)
		// A picture every second: three tiles (two on top, the third centred below) for a
		// while, then two side by side to the end.
		three := map[[2]int]string{{160, 90}: "red", {480, 90}: "green", {320, 270}: "blue"}
		two := map[[2]int]string{{160, 180}: "green", {480, 180}: "blue"}
		pics := picturesEverySecond(t, file)
		firstThree, firstTwo := -1, -1
		for i, pic := range pics {
			switch {
			case firstThree < 0 && sameColours(colours(pic, three), three):
				firstThree = i
			case firstThree >= 0 && firstTwo < 0 && sameColours(colours(pic, two), two):
				firstTwo = i
			case firstTwo >= 0 && !sameColours(colours(pic, two), two):
				t.Errorf("%s at %d s: after the re-tile, want %v, have %v", name, i, two, colours(pic, two))
			}
		}
		t.Logf("%s: three tiles from %d s, two from %d s (of %d)", name, firstThree, firstTwo, len(pics))
		if firstThree < 0 || firstTwo < 0 || firstTwo-firstThree < 4 {
			for i, pic := range pics {
				t.Logf("%s at %d s: %v / %v", name, i, colours(pic, three), colours(pic, two))
			}
			t.Fatalf("%s: want three tiles for 4 s or more, then two", name)
		}
		leftAt := float64(firstTwo)
		tones := tonesIn(t, file, leftAt-3.5, 2, 440, 660, 880, 550)
		t.Logf("%s: tones 440/660/880/550 Hz at %.3f of the power", name, tones)
		if tones[0] < 0.1 || tones[1] < 0.1 || tones[2] < 0.1 || tones[3] > 0.02 {
			t.Errorf("%s: the mix lacks a tone: %.3f", name, tones)
		}
	}
}

// checkContinuous fails when the video timestamps of file go back or leave a gap over 100 ms.
func checkContinuous(t *testing.T, name, file string) {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time", //nolint:gosec // a test file
		"-of", "csv=p=0", file).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", name, err)
	}
	var pts []float64
	for _, l := range strings.Fields(string(out)) {
		v, err := strconv.ParseFloat(strings.TrimSuffix(l, ","), 64)
		if err == nil {
			pts = append(pts, v)
		}
	}
	if len(pts) < 100 {
		t.Fatalf("%s: %d video packets", name, len(pts))
	}
	// Packets are in decode order; without B-frames (the composite makes none) that is
	// presentation order too.
	maxGap := 0.0
	for i := 1; i < len(pts); i++ {
		if pts[i] <= pts[i-1] {
			t.Fatalf("%s: video timestamps go back at packet %d: %.3f after %.3f", name, i, pts[i], pts[i-1])
		}
		maxGap = max(maxGap, pts[i]-pts[i-1])
	}
	t.Logf("%s: %d video frames over %.1f s, largest gap %.0f ms", name, len(pts), pts[len(pts)-1]-pts[0], maxGap*1000)
	if maxGap > 0.1 {
		t.Errorf("%s: a %.0f ms gap in the video", name, maxGap*1000)
	}
}

// picturesEverySecond decodes one 640x360 picture per second of file (I420).
func picturesEverySecond(t *testing.T, file string) [][]byte {
	t.Helper()
	const size = 640 * 360 * 3 / 2
	out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-i", file, //nolint:gosec // a test file
		"-vf", "fps=1", "-s", "640x360", "-pix_fmt", "yuv420p", "-f", "rawvideo", "-").Output()
	if err != nil || len(out) < size {
		t.Fatalf("decoding %s: %v (%d bytes)", file, err, len(out))
	}
	var pics [][]byte
	for ; len(out) >= size; out = out[size:] {
		pics = append(pics, out[:size])
	}
	return pics
}

// colours names the colour around each point of an I420 640x360 picture.
func colours(pic []byte, points map[[2]int]string) map[[2]int]string {
	const w, h = 640, 360
	got := map[[2]int]string{}
	for at := range points {
		var sb, sr, n int
		for j := at[1]/2 - 4; j < at[1]/2+4; j++ {
			for i := at[0]/2 - 4; i < at[0]/2+4; i++ {
				sb += int(pic[w*h+j*w/2+i])
				sr += int(pic[w*h+w*h/4+j*w/2+i])
				n++
			}
		}
		b, r := sb/n, sr/n
		switch {
		case r > 180 && b < 128:
			got[at] = "red"
		case r < 100 && b < 100:
			got[at] = "green"
		case b > 180 && r < 140:
			got[at] = "blue"
		default:
			got[at] = fmt.Sprintf("cb=%d cr=%d", b, r)
		}
	}
	return got
}

func sameColours(a, b map[[2]int]string) bool {
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}

// tonesIn decodes dur seconds of file's audio from sec (mono, 48 kHz) and returns the power of
// each frequency relative to the whole signal's.
func tonesIn(t *testing.T, file string, sec, dur float64, freqs ...float64) []float64 {
	t.Helper()
	out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-ss", fmt.Sprintf("%.2f", sec), "-t", fmt.Sprintf("%.2f", dur), //nolint:gosec // a test file
		"-i", file, "-vn", "-ac", "1", "-ar", "48000", "-f", "s16le", "-").Output()
	if err != nil || len(out) < 48000 {
		t.Fatalf("decoding the audio of %s: %v (%d bytes)", file, err, len(out))
	}
	s := make([]float64, len(out)/2)
	var total float64
	for i := range s {
		s[i] = float64(int16(uint16(out[2*i]) | uint16(out[2*i+1])<<8))
		total += s[i] * s[i]
	}
	res := make([]float64, len(freqs))
	for i, f := range freqs {
		w := 2 * math.Pi * f / 48000
		coeff := 2 * math.Cos(w)
		var q1, q2 float64
		for _, v := range s {
			q1, q2 = coeff*q1-q2+v, q1
		}
		res[i] = (q1*q1 + q2*q2 - coeff*q1*q2) / (total * float64(len(s)) / 2)
	}
	return res
}
