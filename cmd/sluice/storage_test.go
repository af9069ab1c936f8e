package main

import (
	"encoding/json"
	"fmt"
	"math"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/recorder"
	"github.com/sluice-media/sluice/recorder/rectest"
	"github.com/sluice-media/sluice/sfu"
)

// TestStorageUploadKill9 records ffmpeg over RTMP for 30 s in 10 s segments, uploads to an
// S3-compatible server process (throttled), kills the daemon with SIGKILL once the first file
// is uploaded, and checks after the restart that the upload resumed without sending a file
// twice; then the downloaded object decodes, the HLS playlist plays every frame from disk and,
// after 'sluice record delete', from storage.
func TestStorageUploadKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("a 30 s recording")
	}
	s3 := rectest.StartS3(t, 400<<10)
	t.Setenv("SLUICE_TEST_S3_SECRET", rectest.S3SecretKey)
	d := startDaemon(t, fmt.Sprintf(`recording: { storage: s3 }
storage:
  targets:
    s3: { endpoint: %q, bucket: %s, prefix: e2e, region: us-east-1, access_key: %s, secret_key: "env:SLUICE_TEST_S3_SECRET", tls: false }
  min_backoff: 200ms
  max_backoff: 2s
`, s3.Addr, rectest.S3Bucket, rectest.S3AccessKey))
	const dur = 30 * time.Second
	wait := publishRTMP(t, d, "cam", dur+2*time.Second)
	d.waitPublisher(t, "cam", 2)
	out, err := d.cli("record", "start", "--room", "cam", "--segment", "10s", "-o", "json")
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
	r = d.waitRecording(t, id, 60*time.Second, func(r recorder.Recording) bool { return len(r.Files) > 0 && r.Files[0].UploadedAt != nil })
	if len(r.Files) < 3 || r.Files[len(r.Files)-1].UploadedAt != nil {
		t.Fatalf("want the last of %d files still uploading at the kill: %+v", len(r.Files), r.Files)
	}
	d.kill()
	done := map[string]bool{}
	for _, f := range r.Files {
		if f.UploadedAt != nil {
			done[path.Base(f.Path)] = true
		}
	}
	before := len(s3.Requests())
	d.start()
	r = d.waitRecording(t, id, 120*time.Second, func(r recorder.Recording) bool {
		return r.Upload != nil && r.Upload.Status != recorder.UploadPending
	})
	if r.Upload.Status != recorder.UploadComplete {
		t.Fatalf("upload after the restart: %+v %+v", r.Upload, r.Upload.Error)
	}
	for _, l := range s3.Requests()[before:] {
		if strings.HasPrefix(l, "request PUT") && done[path.Base(l)] {
			t.Errorf("uploaded again after the restart: %s", l)
		}
	}
	objs := s3.Objects(t)
	if len(objs) != len(r.Files)+1 {
		t.Errorf("%d objects for %d files and the manifest: %v", len(objs), len(r.Files), objs)
	}
	want := 0
	for i, f := range r.Files {
		if objs["e2e/"+f.Path] != f.SizeBytes || !strings.HasPrefix(f.Location, "http://"+s3.Addr+"/") {
			t.Errorf("file %d: object %d bytes, listed %+v", i, objs["e2e/"+f.Path], f)
		}
		want += rectest.VideoFrames(t, filepath.Join(d.recordingsDir(), filepath.FromSlash(f.Path)))
	}
	dst := filepath.Join(t.TempDir(), "object.mp4")
	s3.Download(t, "e2e/"+r.Files[0].Path, dst)
	rectest.Verify(t, dst, 0, "h264", "aac")

	playlist := d.URL + "/v1/recordings/" + id + "/index.m3u8"
	check := func(what string) {
		t.Helper()
		got := rectest.VideoFrames(t, playlist)
		if math.Abs(float64(got-want)) > 0.01*float64(want) {
			t.Errorf("%s: the HLS playlist plays %d frames, the files hold %d", what, got, want)
		}
		t.Logf("%s: HLS plays %d of %d frames", what, got, want)
	}
	check("local")
	out, err = d.cli("record", "delete", id)
	if err != nil || !strings.Contains(out, "kept in storage target s3") {
		t.Fatalf("record delete: %v\n%s", err, out)
	}
	check("uploaded")
	var deleted int
	for _, ev := range d.loggedEvents() {
		if ev.Type == sfu.EventRecordingDeleted && ev.Recording.ID == id && ev.Reason == recorder.ReasonRequested {
			deleted++
		}
		b, _ := json.Marshal(ev)
		if strings.Contains(string(b), rectest.S3SecretKey) {
			t.Errorf("the secret key in event %s", ev.Type)
		}
	}
	if deleted != 1 {
		t.Errorf("%d recording.deleted events", deleted)
	}
	if strings.Contains(d.logs.String(), rectest.S3SecretKey) {
		t.Error("the secret key in the daemon's log")
	}
}
