package recorder

import (
	"encoding/json"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/recorder/rectest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// s3Storage is a storage section with one target, "s3", on the test server.
func s3Storage(s *rectest.S3Server, secretKey string, deleteLocal bool) StorageConfig {
	no := false
	c := DefaultStorageConfig()
	c.MinBackoff, c.MaxBackoff, c.MaxAttempts = 200*time.Millisecond, time.Second, 30
	c.Targets = map[string]Target{"s3": {Endpoint: s.Addr, Bucket: rectest.S3Bucket, Prefix: "site-a", Region: "us-east-1",
		AccessKey: "env:TEST_S3_AK", SecretKey: secretKey, TLS: &no, DeleteLocal: deleteLocal}}
	return c
}

func uploaded(r *Recording) bool {
	return r.Upload != nil && (r.Upload.Status == UploadComplete || r.Upload.Status == UploadFailed)
}

// checkNoSecret fails when the secret shows in any event.
func checkNoSecret(t *testing.T, evs []sfu.Event, secret string) {
	t.Helper()
	for _, ev := range evs {
		b, _ := json.Marshal(ev)
		if strings.Contains(string(b), secret) || strings.Contains(string(b), rectest.S3AccessKey) {
			t.Fatalf("a credential in event %s: %s", ev.Type, b)
		}
	}
}

// TestUploadToS3 records, uploads every file and the manifest to a real S3-compatible server
// process, and decodes the downloaded object.
func TestUploadToS3(t *testing.T) {
	s3 := rectest.StartS3(t, 0)
	t.Setenv("TEST_S3_AK", rectest.S3AccessKey)
	cfg := testConfig()
	cfg.Storage = "s3"
	e := newEnvStorage(t, cfg, nil, s3Storage(s3, rectest.S3SecretKey, true))
	video, audio := rectest.H264Opus(t, 8, 2)
	rec := e.record(t, "up", 5*time.Second, Request{Segment: 2 * time.Second}, video, audio)
	got := e.waitStatus(rec.ID, 30*time.Second, func(r *Recording) bool {
		return r.Upload.Status == UploadFailed || r.Upload.LocalDeleted
	})
	if got.Upload.Status != UploadComplete || len(got.Files) < 2 {
		t.Fatalf("upload: %+v, %d files", got.Upload, len(got.Files))
	}
	objs := s3.Objects(t)
	for i, f := range got.Files {
		key := "site-a/" + f.Path
		if objs[key] != f.SizeBytes || f.UploadedAt == nil || f.Location != "http://"+s3.Addr+"/"+rectest.S3Bucket+"/"+key {
			t.Errorf("file %d: object %d bytes, listed %+v", i, objs[key], f)
		}
		if _, err := os.Stat(e.file(got, i)); !os.IsNotExist(err) {
			t.Errorf("local copy of an uploaded file is still there (delete_local): %v", err)
		}
	}
	if _, ok := objs[got.Upload.ManifestKey]; !ok || len(objs) != len(got.Files)+1 {
		t.Errorf("objects %v, manifest key %q", objs, got.Upload.ManifestKey)
	}
	dst := filepath.Join(t.TempDir(), "first.mp4")
	s3.Download(t, "site-a/"+got.Files[0].Path, dst)
	rectest.Verify(t, dst, 0, "h264", "opus")
	// Each file's location is reported, then the manifest's upload, then the local deletion.
	evs := e.recordingEvents(rec.ID)
	located := 0
	for _, ev := range evs {
		if ev.Type == sfu.EventRecordingUpdated && ev.Recording.Status == StatusComplete {
			located = 0
			for _, f := range ev.Recording.Files {
				if strings.HasPrefix(f.Location, "http://") {
					located++
				}
			}
		}
	}
	if located != len(got.Files) {
		t.Errorf("last recording.updated shows %d of %d files uploaded", located, len(got.Files))
	}
	checkNoSecret(t, evs, rectest.S3SecretKey)
	// Completed segments go while the recording runs.
	live := false
	for _, ev := range evs {
		if ev.Type == sfu.EventRecordingUpdated && ev.Recording.Status == StatusActive && strings.HasPrefix(ev.Recording.Files[0].Location, "http://") {
			live = true
		}
	}
	if !live {
		t.Error("no segment was uploaded while recording")
	}
	// The recording stays listed after a restart, still uploaded.
	e.stopRecorder()
	e.startRecorder(cfg, nil)
	again, err := e.rec.Get(rec.ID)
	if err != nil || again.Upload.Status != UploadComplete || !again.Upload.LocalDeleted {
		t.Fatalf("after restart: %v %+v", err, again)
	}
}

// TestUploadStorageRestart kills the storage server in the middle of an upload and starts it
// again: the uploader's retries finish the upload.
func TestUploadStorageRestart(t *testing.T) {
	s3 := rectest.StartS3(t, 64<<10)
	t.Setenv("TEST_S3_AK", rectest.S3AccessKey)
	cfg := testConfig()
	e := newEnvStorage(t, cfg, nil, s3Storage(s3, rectest.S3SecretKey, false))
	video, audio := rectest.H264Opus(t, 8, 2)
	rec := e.record(t, "restart", 5*time.Second, Request{Storage: "s3"}, video, audio)
	waitRequest(t, s3, "request PUT /"+rectest.S3Bucket+"/site-a/restart/")
	s3.Kill()
	time.Sleep(time.Second)
	s3.Start(0)
	got := e.waitStatus(rec.ID, 60*time.Second, uploaded)
	if got.Upload.Status != UploadComplete || got.Upload.Attempts < 2 {
		t.Fatalf("upload: %+v", got.Upload)
	}
	objs := s3.Objects(t)
	if objs["site-a/"+got.Files[0].Path] != got.Files[0].SizeBytes {
		t.Fatalf("objects after the restart: %v", objs)
	}
	if _, err := os.Stat(e.file(got, 0)); err != nil {
		t.Errorf("local file removed without delete_local: %v", err)
	}
}

func waitRequest(t *testing.T, s3 *rectest.S3Server, prefix string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, l := range s3.Requests() {
			if strings.HasPrefix(l, prefix) {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no request %q in %v", prefix, s3.Requests())
}

// TestUploadResumes stops the recorder in the middle of an upload (its manifest then says what
// a kill -9 leaves) and starts a new one: the files already uploaded are not sent again.
func TestUploadResumes(t *testing.T) {
	s3 := rectest.StartS3(t, 32<<10)
	t.Setenv("TEST_S3_AK", rectest.S3AccessKey)
	cfg := testConfig()
	e := newEnvStorage(t, cfg, nil, s3Storage(s3, rectest.S3SecretKey, false))
	video, audio := rectest.H264Opus(t, 10, 2)
	rec := e.record(t, "resume", 7*time.Second, Request{Storage: "s3", Segment: 2 * time.Second}, video, audio)
	e.waitStatus(rec.ID, 60*time.Second, func(r *Recording) bool { return len(r.Files) > 2 && r.Files[0].UploadedAt != nil })
	e.stopRecorder()
	m, err := readManifest(filepath.Join(e.dir, "resume", rec.ID, ManifestName))
	if err != nil || m.Upload.Status != UploadPending || m.Files[len(m.Files)-1].UploadedAt != nil {
		t.Fatalf("manifest after the stop: %v %+v", err, m.Upload)
	}
	done := map[string]bool{}
	for _, f := range m.Files {
		if f.UploadedAt != nil {
			done[path.Base(f.Path)] = true
		}
	}
	before := len(s3.Requests())
	e.startRecorder(cfg, nil)
	got := e.waitStatus(rec.ID, 60*time.Second, uploaded)
	if got.Upload.Status != UploadComplete {
		t.Fatalf("upload: %+v", got.Upload)
	}
	for _, l := range s3.Requests()[before:] {
		if strings.HasPrefix(l, "request PUT") && done[path.Base(l)] {
			t.Errorf("uploaded again after the restart: %s", l)
		}
	}
	objs := s3.Objects(t)
	if len(objs) != len(got.Files)+1 {
		t.Errorf("objects %v for %d files", objs, len(got.Files))
	}
}

// TestUploadWrongCredentials gets a precise error event and keeps the local files.
func TestUploadWrongCredentials(t *testing.T) {
	s3 := rectest.StartS3(t, 0)
	t.Setenv("TEST_S3_AK", rectest.S3AccessKey)
	const wrong = "not-the-secret-key-42"
	cfg := testConfig()
	e := newEnvStorage(t, cfg, nil, s3Storage(s3, wrong, false))
	video, audio := rectest.H264Opus(t, 5, 2)
	rec := e.record(t, "creds", 3*time.Second, Request{Storage: "s3"}, video, audio)
	got := e.waitStatus(rec.ID, 30*time.Second, uploaded)
	if got.Upload.Status != UploadFailed || got.Upload.Error == nil || !strings.Contains(got.Upload.Error.Message, "SignatureDoesNotMatch") {
		t.Fatalf("upload: %+v %+v", got.Upload, got.Upload.Error)
	}
	if got.Upload.Attempts != 1 {
		t.Errorf("a credentials error was retried: %d attempts", got.Upload.Attempts)
	}
	// The status is read before the event that reports it has been emitted.
	var evs []sfu.Event
	var last sfu.Event
	sfutest.WaitFor(t, "the upload failure's event", 10*time.Second, func() bool {
		evs = e.recordingEvents(rec.ID)
		last = evs[len(evs)-1]
		return last.Error != nil
	})
	if last.Type != sfu.EventRecordingUpdated || last.Error.Code != CodeUploadFailed || last.Reason != sfu.ReasonError {
		t.Errorf("last event: %s %s %+v", last.Type, last.Reason, last.Error)
	}
	checkNoSecret(t, evs, wrong)
	if _, err := os.Stat(e.file(got, 0)); err != nil {
		t.Errorf("local file after a failed upload: %v", err)
	}
	if len(s3.Objects(t)) != 0 {
		t.Errorf("objects stored with wrong credentials")
	}
}
