package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest/rtsp/rtsptest"
	"github.com/sluice-media/sluice/recorder"
	"github.com/sluice-media/sluice/recorder/rectest"
)

// recordingOf runs 'sluice record show ID -o json'.
func (d *daemonProc) recordingOf(t *testing.T, id string) recorder.Recording {
	t.Helper()
	out, err := d.cli("record", "show", id, "-o", "json")
	if err != nil {
		t.Fatalf("record show: %v\n%s", err, out)
	}
	var r recorder.Recording
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("record show -o json: %v\n%s", err, out)
	}
	return r
}

func (d *daemonProc) waitRecording(t *testing.T, id string, within time.Duration, ok func(recorder.Recording) bool) recorder.Recording {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r := d.recordingOf(t, id)
		if ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("recording %s: still %s with %d files after %v", id, r.Status, len(r.Files), within)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (d *daemonProc) recordingsDir() string { return filepath.Join(d.dir, "data", "recordings") }

// waitPublisher waits until room has a participant with n tracks.
func (d *daemonProc) waitPublisher(t *testing.T, room string, n int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		out, err := d.cli("rooms", "show", room, "-o", "json")
		if err == nil && strings.Count(out, `"codec"`) >= n {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no publisher with %d tracks in %s", n, room)
}

func startedRecording(t *testing.T, out string) string {
	t.Helper()
	var r recorder.Recording
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.ID == "" {
		t.Fatalf("record start -o json: %v\n%s", err, out)
	}
	return r.ID
}

// TestRecordCLI drives a recording of a WHIP publisher from the command line, and downloads a
// file with a Range request.
func TestRecordCLI(t *testing.T) {
	d := startDaemon(t, "")
	video, audio := rectest.H264Opus(t, 31, 0)
	stop := rectest.WHIPPublish(t, d.URL+"/whip/show", 8*time.Second, video, audio)
	defer stop()
	stop2 := rectest.WHIPPublish(t, d.URL+"/whip/shutdown", 20*time.Second, video, audio)
	defer stop2()
	d.waitPublisher(t, "show", 2)
	if out, err := d.cli("record", "start", "--room", "nope"); err == nil || !strings.Contains(out, "not found") {
		t.Errorf("recording a missing room: %v %s", err, out)
	}
	out, err := d.cli("record", "start", "--room", "show", "-o", "json")
	if err != nil {
		t.Fatalf("record start: %v\n%s", err, out)
	}
	id := startedRecording(t, out)
	d.waitRecording(t, id, 15*time.Second, func(r recorder.Recording) bool { return r.Status == recorder.StatusActive })
	if out, err := d.cli("record", "list"); err != nil || !strings.Contains(out, id) || !strings.Contains(out, "active") {
		t.Errorf("record list: %v\n%s", err, out)
	}
	if out, err := d.cli("status"); err != nil || !strings.Contains(out, "recordings: 1") {
		t.Errorf("status: %v\n%s", err, out)
	}
	stop()
	out, err = d.cli("record", "stop", id)
	if err != nil || !strings.Contains(out, "complete") {
		t.Fatalf("record stop: %v\n%s", err, out)
	}
	r := d.recordingOf(t, id)
	if len(r.Files) != 1 {
		t.Fatalf("files %+v", r.Files)
	}
	file := filepath.Join(d.recordingsDir(), filepath.FromSlash(r.Files[0].Path))
	rectest.Verify(t, file, 0, "h264", "opus")
	show, err := d.cli("record", "show", id)
	if err != nil || !strings.Contains(show, "/v1/recordings/"+id+"/files/") {
		t.Fatalf("record show: %v\n%s", err, show)
	}
	req, _ := http.NewRequest("GET", d.URL+"/v1/recordings/"+id+"/files/"+filepath.Base(file), nil)
	req.Header.Set("Range", "bytes=0-7")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || string(b[4:8]) != "ftyp" {
		t.Errorf("download: %d %q", resp.StatusCode, b)
	}

	// A graceful shutdown closes the files and ends the recording with reason server_shutdown.
	d.waitPublisher(t, "shutdown", 2)
	out, err = d.cli("record", "start", "--room", "shutdown", "-o", "json")
	if err != nil {
		t.Fatalf("record start: %v\n%s", err, out)
	}
	id2 := startedRecording(t, out)
	d.waitRecording(t, id2, 15*time.Second, func(r recorder.Recording) bool { return r.Status == recorder.StatusActive && r.DurationMs > 0 })
	d.stop()
	d.start()
	r2 := d.recordingOf(t, id2)
	if r2.Status != recorder.StatusComplete || r2.Reason != "server_shutdown" || len(r2.Files) != 1 || !r2.Details[0].Complete {
		t.Fatalf("after a graceful shutdown: %s %q %+v", r2.Status, r2.Reason, r2.Details)
	}
	rectest.Verify(t, filepath.Join(d.recordingsDir(), filepath.FromSlash(r2.Files[0].Path)), 0, "h264", "opus")
}

// TestRecordKill9 kills the daemon 20 s into a recording: the file plays up to at least 16 s,
// and after restart the recording is failed with that file listed and recording.failed emitted.
func TestRecordKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("a 20 s recording")
	}
	d := startDaemon(t, "")
	video, audio := rectest.H264Opus(t, 31, 0)
	stop := rectest.WHIPPublish(t, d.URL+"/whip/cam", 26*time.Second, video, audio)
	defer stop()
	d.waitPublisher(t, "cam", 2)
	out, err := d.cli("record", "start", "--room", "cam", "-o", "json")
	if err != nil {
		t.Fatalf("record start: %v\n%s", err, out)
	}
	id := startedRecording(t, out)
	r := d.waitRecording(t, id, 15*time.Second, func(r recorder.Recording) bool { return r.Status == recorder.StatusActive })
	time.Sleep(time.Until(r.StartedAt.Add(20 * time.Second)))
	d.kill()

	file := filepath.Join(d.recordingsDir(), filepath.FromSlash(r.Files[0].Path))
	if dur := rectest.Seconds(rectest.FFprobe(t, file).Format.Duration); dur < 16 {
		t.Errorf("the cut file plays %.2f s, want at least 16 s", dur)
	}
	d.start()
	r = d.recordingOf(t, id)
	if r.Status != recorder.StatusFailed || r.Error == nil || len(r.Files) != 1 {
		t.Fatalf("after restart: %s %+v files %+v", r.Status, r.Error, r.Files)
	}
	p := rectest.Verify(t, file, 0, "h264", "opus")
	if dur := rectest.Seconds(p.Format.Duration); dur < 16 || float64(r.Files[0].DurationMs)/1000 < 16 {
		t.Errorf("recovered file plays %.2f s, listed %d ms: want at least 16 s", dur, r.Files[0].DurationMs)
	}
	if !strings.Contains(d.logs.String(), fmt.Sprintf("type=%s", "recording.failed")) {
		t.Errorf("no recording.failed event after the restart")
	}
}

// publishFunc publishes real media (H.264 and audio) into room of the daemon for d; wait blocks
// until the feed is over.
type publishFunc func(t *testing.T, d *daemonProc, room string, dur time.Duration) (wait func())

// publishWHIP publishes H.264 (baseline, as browsers send) and Opus from a pion WHIP peer.
func publishWHIP(t *testing.T, d *daemonProc, room string, dur time.Duration) func() {
	video, audio := rectest.H264Opus(t, 31, 0)
	stop := rectest.WHIPPublish(t, d.URL+"/whip/"+room, dur, video, audio)
	t.Cleanup(stop)
	return stop
}

// publishRTMP publishes as OBS does: ffmpeg with x264 High, two B-frames, AAC 48 kHz.
func publishRTMP(t *testing.T, d *daemonProc, room string, dur time.Duration) func() {
	_, _, exited := ffmpegOBS(t, fmt.Sprintf("rtmp://127.0.0.1:%d/live/%s", d.RTMPPort, room), int(dur/time.Second)+1, 2)
	return func() { <-exited }
}

// publishCamera adds an RTSP pull ingest of a camera emulator serving H.264 and AAC.
func publishCamera(t *testing.T, d *daemonProc, room string, _ time.Duration) func() {
	cam := rtsptest.NewCamera(t, rtsptest.CameraOptions{Audio: "aac"})
	if out, err := d.cli("ingest", "create", "rtsp", "--room", room, "--url", cam.URL("", ""), "--transport", "tcp"); err != nil {
		t.Fatalf("ingest create: %v\n%s", err, out)
	}
	return func() {}
}

// TestRecord30s records each ingest for 30 s through the daemon and checks the file: codecs,
// duration within 5 % of the recorded wall time, audio and video starts within 100 ms, and a
// clean decode: a WHIP publisher (pion), ffmpeg as OBS over RTMP with B-frames, and an RTSP
// camera emulator (H.264 with parameter sets in the SDP only, AAC) pulled by an ingest.
func TestRecord30s(t *testing.T) {
	if testing.Short() {
		t.Skip("30 s recordings")
	}
	for _, tc := range []struct {
		name    string
		publish publishFunc
		tracks  int
		codecs  []string
	}{
		{"whip", publishWHIP, 2, []string{"h264", "opus"}},
		{"rtmp", publishRTMP, 2, []string{"h264", "aac"}},
		{"rtsp", publishCamera, 2, []string{"h264", "aac"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDaemon(t, "")
			const dur = 30 * time.Second
			wait := tc.publish(t, d, tc.name, dur+2*time.Second)
			d.waitPublisher(t, tc.name, tc.tracks)
			out, err := d.cli("record", "start", "--room", tc.name, "-o", "json")
			if err != nil {
				t.Fatalf("record start: %v\n%s", err, out)
			}
			id := startedRecording(t, out)
			r := d.waitRecording(t, id, 15*time.Second, func(r recorder.Recording) bool { return r.Status == recorder.StatusActive })
			time.Sleep(time.Until(r.StartedAt.Add(dur)))
			if out, err := d.cli("record", "stop", id); err != nil {
				t.Fatalf("record stop: %v\n%s", err, out)
			}
			wait()
			r = d.recordingOf(t, id)
			if r.Status != recorder.StatusComplete || len(r.Files) != 1 {
				t.Fatalf("recording %s with %d files", r.Status, len(r.Files))
			}
			rectest.Verify(t, filepath.Join(d.recordingsDir(), filepath.FromSlash(r.Files[0].Path)), r.EndedAt.Sub(*r.StartedAt), tc.codecs...)
		})
	}
}
