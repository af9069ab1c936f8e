package main

import (
	"fmt"
	"math"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest/rtsp/rtsptest"
	"github.com/sluice-media/sluice/recorder"
	"github.com/sluice-media/sluice/recorder/rectest"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// A camera whose clocks misbehave, pulled over UDP and recorded in 8 s segments: its RTP
// timestamps wrap around 2^32, jump 6 h forward, then 10 min back, its sender reports' NTP
// time jumps an hour, and every fifth packet comes after the next (the camera emulator reorders,
// as netem would). The recording goes on through all of it: each segment decodes cleanly with
// increasing timestamps, no gap over a second, a duration within segment length plus one
// fragment, and the segments add up to the recorded time; a WHEP viewer keeps receiving frames.
func TestCameraClockJumps(t *testing.T) {
	sfutest.RequireTool(t, "ffprobe")
	clock := &rtsptest.Clock{}
	cam := rtsptest.NewCamera(t, rtsptest.CameraOptions{Audio: "aac", Clock: clock, WrapAfter: 9 * time.Second, Reorder: true})
	camStart := time.Now()
	d := startDaemon(t, fmt.Sprintf(`recording: { fragment_duration: 1s }
ingests:
  - { id: cam, type: rtsp_pull, room: yard, url: %q, transport: udp }
`, cam.URL("", "")))
	d.waitPublisher(t, "yard", 2)
	viewer := newSeqViewer(t, d.URL+"/whep/yard")
	out, err := d.cli("record", "start", "--room", "yard", "--segment", "8s", "-o", "json")
	if err != nil {
		t.Fatalf("record start: %v\n%s", err, out)
	}
	id := startedRecording(t, out)
	rec := d.waitRecording(t, id, 15*time.Second, func(r recorder.Recording) bool { return r.Status == recorder.StatusActive })

	// goesOn waits for the viewer to receive 2 s of frames more.
	goesOn := func(what string) {
		t.Helper()
		seen := viewer.frameCount()
		sfutest.WaitFor(t, "the viewer's frames after "+what, 15*time.Second, func() bool { return viewer.frameCount() >= seen+50 })
	}
	time.Sleep(time.Until(camStart.Add(11 * time.Second))) // past the wrap
	goesOn("the RTP clocks wrapped")
	clock.JumpRTP(6 * time.Hour)
	goesOn("a 6 h jump forward")
	time.Sleep(2 * time.Second)
	clock.JumpRTP(-10 * time.Minute)
	goesOn("a 10 min jump back")
	clock.JumpNTP(time.Hour)
	time.Sleep(11 * time.Second) // a sender report with the jumped NTP time (every 10 s)
	goesOn("an NTP jump")
	if out, err := d.cli("record", "stop", id); err != nil {
		t.Fatalf("record stop: %v\n%s", err, out)
	}
	rec = d.waitRecording(t, id, 20*time.Second, func(r recorder.Recording) bool { return r.Status == recorder.StatusComplete })
	wall := rec.EndedAt.Sub(*rec.StartedAt).Seconds()

	const segment, fragment = 8.0, 1.0
	total := 0.0
	for _, f := range rec.Files {
		file := filepath.Join(d.recordingsDir(), filepath.FromSlash(f.Path))
		p := rectest.Verify(t, file, 0, "h264", "aac")
		dur := rectest.Seconds(p.Format.Duration)
		total += dur
		t.Logf("%s: %.3f s", f.Path, dur)
		if dur > segment+fragment {
			t.Errorf("%s: %.3f s, longer than a segment and a fragment", f.Path, dur)
		}
		for _, stream := range []string{"v:0", "a:0"} {
			ts := packetTimes(t, file, stream)
			maxGap := 0.0
			for i := 1; i < len(ts); i++ {
				maxGap = max(maxGap, ts[i]-ts[i-1])
			}
			if len(ts) > 0 {
				t.Logf("%s %s: %d packets from %.3f to %.3f s, largest gap %.3f s", f.Path, stream, len(ts), ts[0], ts[len(ts)-1], maxGap)
			}
			for i := 1; i < len(ts); i++ {
				if gap := ts[i] - ts[i-1]; gap <= 0 || gap > 1 {
					t.Errorf("%s %s: packet %d at %.3f s after %.3f s", f.Path, stream, i, ts[i], ts[i-1])
					break
				}
			}
		}
	}
	if math.Abs(total-wall) > 3 {
		t.Errorf("the segments hold %.1f s of media; the recording ran %.1f s", total, wall)
	}
	if j := viewer.jumps(); j > 0 {
		t.Logf("the viewer's video had %d sequence jumps", j)
	}
	logs := d.logs.String()
	for _, what := range []string{"the source's RTP clock jumped", "the source's sender reports' NTP time jumped"} {
		if !strings.Contains(logs, what) {
			t.Errorf("the daemon did not log %q", what)
		}
	}
}

// packetTimes returns the decode times of a stream's packets in a file, in file order.
func packetTimes(t *testing.T, file, stream string) []float64 {
	t.Helper()
	out, err := exec.Command(sfutest.RequireTool(t, "ffprobe"), "-v", "error", "-select_streams", stream, //nolint:gosec // test input
		"-show_entries", "packet=dts_time", "-of", "csv=p=0", file).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", file, err)
	}
	var ts []float64
	for _, l := range strings.Fields(string(out)) {
		v, err := strconv.ParseFloat(strings.TrimSuffix(l, ","), 64)
		if err != nil {
			t.Fatalf("ffprobe %s: %q", file, l)
		}
		ts = append(ts, v)
	}
	return ts
}
