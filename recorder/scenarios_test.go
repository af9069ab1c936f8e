package recorder

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/sluice-media/sluice/recorder/rectest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// record publishes srcs into room for d, records them, and returns the stopped recording.
func (e *env) record(t *testing.T, room string, d time.Duration, req Request, srcs ...*rectest.Track) *Recording {
	t.Helper()
	pub := e.publish(room, "pub", d, true, srcs...)
	defer pub.leave()
	req.Room = room
	rec, err := e.rec.Start(req)
	if err != nil {
		t.Fatal(err)
	}
	pub.wait()
	final, err := e.rec.Stop(context.Background(), rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	return final
}

func TestRecordCodecs(t *testing.T) {
	e := newEnv(t, testConfig(), nil)
	h264v, aac := rectest.H264AAC(t, 6)
	_, opusA := rectest.H264Opus(t, 6, 2)
	for _, tc := range []struct {
		name   string
		srcs   []*rectest.Track
		format string
		ext    string
		codecs []string
	}{
		{"h264-aac", []*rectest.Track{h264v, aac}, "mp4", ".mp4", []string{"h264", "aac"}},
		{"h265", []*rectest.Track{rectest.H265(t, 6)}, "mp4", ".mp4", []string{"hevc"}},
		{"vp8-opus-auto-webm", []*rectest.Track{rectest.VP8(t, 6), opusA}, "mp4", ".webm", []string{"vp8", "opus"}},
		{"h264-opus-mkv", []*rectest.Track{h264v, opusA}, "mkv", ".mkv", []string{"h264", "opus"}},
		{"h264-pcmu", []*rectest.Track{h264v, rectest.PCMU(t, 6)}, "mp4", ".mp4", []string{"h264", "pcm_s16be"}},
		{"vp8-pcmu-mkv", []*rectest.Track{rectest.VP8(t, 6), rectest.PCMU(t, 6)}, "mkv", ".mkv", []string{"vp8", "pcm_s16be"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			final := e.record(t, "codec-"+tc.name, 5*time.Second, Request{Format: tc.format}, tc.srcs...)
			if final.Status != StatusComplete || len(final.Files) != 1 {
				t.Fatalf("recording %s with %d files (%v)", final.Status, len(final.Files), final.Error)
			}
			if ext := filepath.Ext(final.Files[0].Path); ext != tc.ext {
				t.Errorf("file %s, want a %s", final.Files[0].Path, tc.ext)
			}
			p := rectest.Verify(t, e.file(final, 0), 0, tc.codecs...)
			if d := rectest.Seconds(p.Format.Duration); d < 3.5 || d > 5.5 {
				t.Errorf("duration %.2f s for a 5 s feed", d)
			}
		})
	}
}

func TestSegmentsRotateAtKeyframes(t *testing.T) {
	e := newEnv(t, testConfig(), nil)
	video, audio := rectest.H264Opus(t, 10, 2)
	final := e.record(t, "seg", 9*time.Second, Request{Segment: 3 * time.Second}, video, audio)
	if final.Status != StatusComplete || len(final.Files) < 3 {
		t.Fatalf("recording %s with %d files, want at least 3 segments", final.Status, len(final.Files))
	}
	var total int64
	for i, f := range final.Files {
		rectest.Verify(t, e.file(final, i), 0, "h264", "opus")
		total += f.DurationMs
	}
	if total < 7500 || total > 9500 {
		t.Errorf("segments add up to %d ms for a 9 s feed", total)
	}
	if final.DurationMs != total {
		t.Errorf("recording duration %d ms, files add up to %d", final.DurationMs, total)
	}
}

func TestPauseResume(t *testing.T) {
	if testing.Short() {
		t.Skip("20 s of media")
	}
	e := newEnv(t, testConfig(), nil)
	video, audio := rectest.H264Opus(t, 31, 2)
	pub := e.publish("pause", "pub", 21*time.Second, true, video, audio)
	defer pub.leave()
	rec, err := e.rec.Start(Request{Room: "pause"})
	if err != nil {
		t.Fatal(err)
	}
	e.waitStatus(rec.ID, 10*time.Second, func(r *Recording) bool { return r.Status == StatusActive })
	time.Sleep(5 * time.Second)
	ctx := context.Background()
	if r, err := e.rec.Pause(ctx, rec.ID); err != nil || !r.Paused {
		t.Fatalf("pause: %v %+v", err, r)
	}
	time.Sleep(10 * time.Second)
	if _, err := e.rec.Resume(ctx, rec.ID); err != nil {
		t.Fatal(err)
	}
	pub.wait()
	final, err := e.rec.Stop(ctx, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if final.Status != StatusComplete || len(final.Files) != 2 {
		t.Fatalf("recording %s with %d files, want complete with 2", final.Status, len(final.Files))
	}
	if len(final.Pauses) != 1 || final.Pauses[0].ResumedAt == nil {
		t.Fatalf("pauses %+v", final.Pauses)
	}
	if span := final.Pauses[0].ResumedAt.Sub(final.Pauses[0].PausedAt); span < 9*time.Second || span > 12*time.Second {
		t.Errorf("pause recorded as %v", span)
	}
	for i := range final.Files {
		rectest.Verify(t, e.file(final, i), 0, "h264", "opus")
	}
	// The paused span is in no file: the files hold the ~10 s recorded around it.
	if final.DurationMs < 8000 || final.DurationMs > 11500 {
		t.Errorf("recorded %d ms around a 10 s pause of a ~21 s feed", final.DurationMs)
	}
	if gap := final.Files[1].StartedAt.Sub(final.Files[0].StartedAt.Add(time.Duration(final.Files[0].DurationMs) * time.Millisecond)); gap < 9*time.Second {
		t.Errorf("second file starts %v after the first ends, want the ~10 s pause", gap)
	}
	// one event per transition, each with its reason and the figures of its moment
	evs := e.recordingEvents(rec.ID)
	want := []string{
		"recording.updated starting requested", "recording.started active requested",
		"recording.updated paused paused", "recording.updated active resumed",
		"recording.updated ending stopped", "recording.ended complete stopped",
	}
	if got := transitions(evs); !slices.Equal(got, want) {
		t.Fatalf("events\n%v\nwant\n%v", got, want)
	}
	paused, resumed, ending := evs[2].Recording, evs[3].Recording, evs[4].Recording
	if len(paused.Files) != 1 || paused.Files[0].DurationMs != final.Files[0].DurationMs || paused.DurationMs != final.Files[0].DurationMs ||
		paused.Files[0].SizeBytes != final.Files[0].SizeBytes || paused.PausedMs > 1000 {
		t.Errorf("paused event: %d files, %d ms, paused %d ms; the closed file has %d ms", len(paused.Files), paused.DurationMs, paused.PausedMs, final.Files[0].DurationMs)
	}
	if len(resumed.Files) != 1 || resumed.PausedMs < 9000 {
		t.Errorf("resumed event: %d files, paused %d ms", len(resumed.Files), resumed.PausedMs)
	}
	if len(ending.Files) != 2 || ending.Files[1].Location != LocationLocal {
		t.Errorf("ending event lists %d files, want the one opened after the resume too", len(ending.Files))
	}
	if last := evs[5].Recording; last.PausedMs != resumed.PausedMs || last.DurationMs != final.DurationMs {
		t.Errorf("ended event: paused %d ms, %d ms; want %d, %d", last.PausedMs, last.DurationMs, resumed.PausedMs, final.DurationMs)
	}
}

// transitions lists events as "type status reason".
func transitions(evs []sfu.Event) []string {
	out := make([]string, 0, len(evs))
	for _, ev := range evs {
		out = append(out, ev.Type+" "+ev.Recording.Status+" "+ev.Reason)
	}
	return out
}

func countType(evs []sfu.Event, typ string) int {
	n := 0
	for _, ev := range evs {
		if ev.Type == typ {
			n++
		}
	}
	return n
}

func TestReconnectWithinGrace(t *testing.T) {
	cfg := testConfig()
	cfg.Grace = 5 * time.Second
	e := newEnv(t, cfg, nil)
	video, audio := rectest.H264Opus(t, 6, 2)
	pub := e.publish("obs", "studio", 4*time.Second, true, video, audio)
	rec, err := e.rec.Start(Request{Room: "obs", Participant: "studio"})
	if err != nil {
		t.Fatal(err)
	}
	pub.wait()
	pub.leave()
	time.Sleep(time.Second)
	pub2 := e.publish("obs", "studio", 4*time.Second, true, video, audio)
	defer pub2.leave()
	pub2.wait()
	final, err := e.rec.Stop(context.Background(), rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if final.Status != StatusComplete || len(final.Files) != 2 {
		t.Fatalf("recording %s with %d files, want complete with 2 (%v)", final.Status, len(final.Files), final.Error)
	}
	for i := range final.Files {
		rectest.Verify(t, e.file(final, i), 0, "h264", "opus")
	}
	evs := e.recordingEvents(rec.ID)
	if countType(evs, sfu.EventRecordingEnded) != 1 || countType(evs, sfu.EventRecordingFailed) != 0 || countType(evs, sfu.EventRecordingStarted) != 1 {
		t.Errorf("events %v: want one started, one ended", types(evs))
	}
}

func TestSourceLostPastGrace(t *testing.T) {
	e := newEnv(t, testConfig(), nil) // grace 2 s
	video, audio := rectest.H264Opus(t, 6, 2)
	pub := e.publish("gone", "cam", 3*time.Second, true, video, audio)
	rec, err := e.rec.Start(Request{Room: "gone", Participant: "cam"})
	if err != nil {
		t.Fatal(err)
	}
	pub.wait()
	pub.leave()
	final := e.waitStatus(rec.ID, 10*time.Second, (*Recording).Terminal)
	if final.Status != StatusFailed || final.Error == nil || final.Error.Code != CodeSourceLost || len(final.Files) != 1 {
		t.Fatalf("recording %s %v with %d files, want failed source_lost with its file", final.Status, final.Error, len(final.Files))
	}
	rectest.Verify(t, e.file(final, 0), 0, "h264", "opus")
	if evs := e.recordingEvents(rec.ID); countType(evs, sfu.EventRecordingFailed) != 1 || evs[len(evs)-1].Error == nil {
		t.Errorf("events %v", types(evs))
	}
}

// fullFS fails writes into files under a directory with ENOSPC once a budget of bytes is used.
type fullFS struct {
	under  string
	budget atomic.Int64
}

func (f *fullFS) Create(path string) (File, error) {
	file, err := OSFS{}.Create(path)
	if err != nil || !strings.Contains(path, f.under) {
		return file, err
	}
	return &fullFile{File: file, fs: f}, nil
}

type fullFile struct {
	File
	fs *fullFS
}

func (f *fullFile) Write(p []byte) (int, error) {
	if f.fs.budget.Add(-int64(len(p))) < 0 {
		n := len(p) / 2 // a partial write, as a full disk does
		_, _ = f.File.Write(p[:n])
		return n, &os.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}
	}
	return f.File.Write(p)
}

func TestDiskFullFailsAlone(t *testing.T) {
	fs := &fullFS{under: string(filepath.Separator) + "full" + string(filepath.Separator)}
	fs.budget.Store(150_000)
	e := newEnv(t, testConfig(), fs)
	video, audio := rectest.H264Opus(t, 10, 2)
	full := e.publish("full", "cam", 8*time.Second, true, video, audio)
	defer full.leave()
	ok := e.publish("ok", "cam", 8*time.Second, true, video, audio)
	defer ok.leave()
	recFull, err := e.rec.Start(Request{Room: "full"})
	if err != nil {
		t.Fatal(err)
	}
	recOK, err := e.rec.Start(Request{Room: "ok"})
	if err != nil {
		t.Fatal(err)
	}
	failed := e.waitStatus(recFull.ID, 15*time.Second, (*Recording).Terminal)
	if failed.Status != StatusFailed || failed.Error == nil || failed.Error.Code != CodeDiskFull {
		t.Fatalf("full-disk recording: %s %+v", failed.Status, failed.Error)
	}
	if len(failed.Files) != 1 || failed.Files[0].SizeBytes == 0 {
		t.Fatalf("failed recording lists %+v", failed.Files)
	}
	if st, err := os.Stat(e.file(failed, 0)); err != nil || st.Size() != failed.Files[0].SizeBytes {
		t.Errorf("file on disk: %v, size %d, listed %d", err, st.Size(), failed.Files[0].SizeBytes)
	}
	rectest.Verify(t, e.file(failed, 0), 0, "h264", "opus") // playable up to its last fragment
	evs := e.recordingEvents(recFull.ID)
	if countType(evs, sfu.EventRecordingFailed) != 1 {
		t.Errorf("events %v", types(evs))
	}
	ok.wait()
	final, err := e.rec.Stop(context.Background(), recOK.ID)
	if err != nil || final.Status != StatusComplete {
		t.Fatalf("the other recording: %v %+v", err, final)
	}
	rectest.Verify(t, e.file(final, 0), 0, "h264", "opus")
}

func TestUnwritableDirFailsAlone(t *testing.T) {
	e := newEnv(t, testConfig(), nil)
	if err := os.MkdirAll(e.dir, 0o750); err != nil {
		t.Fatal(err)
	}
	// A file where the room's directory should be: nothing can be created under it (even as root).
	if err := os.WriteFile(filepath.Join(e.dir, "blocked"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	video, audio := rectest.H264Opus(t, 6, 2)
	b := e.publish("blocked", "cam", 5*time.Second, true, video, audio)
	defer b.leave()
	rec, err := e.rec.Start(Request{Room: "blocked"})
	if err != nil {
		t.Fatal(err)
	}
	failed := e.waitStatus(rec.ID, 10*time.Second, (*Recording).Terminal)
	if failed.Status != StatusFailed || failed.Error == nil || failed.Error.Code != CodeWriteFailed {
		t.Fatalf("recording in an unwritable dir: %s %+v", failed.Status, failed.Error)
	}
	if strings.Contains(failed.Error.Message, e.dir) {
		t.Errorf("error message leaks the path: %s", failed.Error.Message)
	}
	if countType(e.recordingEvents(rec.ID), sfu.EventRecordingFailed) != 1 {
		t.Error("no recording.failed")
	}
	final := e.record(t, "fine", 4*time.Second, Request{}, video, audio)
	if final.Status != StatusComplete {
		t.Fatalf("the other recording: %+v", final)
	}
}

// TestCrashRecovery takes a live recording's directory as a crash leaves it (manifest active,
// a fragment cut in the middle) and starts a recorder on it.
func TestCrashRecovery(t *testing.T) {
	cfg := testConfig()
	cfg.FragmentDuration = time.Second
	e := newEnv(t, cfg, nil)
	video, audio := rectest.H264Opus(t, 10, 2)
	pub := e.publish("crash", "cam", 6*time.Second, true, video, audio)
	defer pub.leave()
	rec, err := e.rec.Start(Request{Room: "crash"})
	if err != nil {
		t.Fatal(err)
	}
	e.waitStatus(rec.ID, 10*time.Second, func(r *Recording) bool { return len(r.Files) == 1 && r.Files[0].DurationMs >= 3000 })
	// The state a kill -9 leaves: copy the directory while recording, then cut into a fragment.
	crashed := filepath.Join(t.TempDir(), "recordings")
	src := filepath.Join(e.dir, "crash", rec.ID)
	dst := filepath.Join(crashed, "crash", rec.ID)
	if err := os.MkdirAll(dst, 0o750); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(src)
	var media string
	for _, en := range entries {
		data, err := os.ReadFile(filepath.Join(src, en.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if mediaFormat(en.Name()) != "" {
			media = en.Name()
			data = append(data, data[len(data)/2:len(data)/2+5000]...) // half a fragment
		}
		if err := os.WriteFile(filepath.Join(dst, en.Name()), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m, err := readManifest(filepath.Join(dst, ManifestName))
	if err != nil || m.Status != StatusActive {
		t.Fatalf("copied manifest: %v %+v", err, m)
	}
	cut, _ := os.Stat(filepath.Join(dst, media))

	e2 := newEnv(t, cfg, nil)
	e2.rec.cancel() // no recordings here: just the catalogue
	e2.dir = crashed
	e2.startRecorder(cfg, nil)
	got := e2.waitStatus(rec.ID, 10*time.Second, (*Recording).Terminal)
	if got.Status != StatusFailed || got.Error == nil || len(got.Files) != 1 || !got.Details[0].Truncated {
		t.Fatalf("recovered: %s %+v files %+v details %+v", got.Status, got.Error, got.Files, got.Details)
	}
	st, _ := os.Stat(filepath.Join(dst, media))
	if st.Size() >= cut.Size() || st.Size() != got.Files[0].SizeBytes {
		t.Errorf("file %d bytes after recovery (was %d, listed %d)", st.Size(), cut.Size(), got.Files[0].SizeBytes)
	}
	p := rectest.Verify(t, filepath.Join(dst, media), 0, "h264", "opus")
	if d := rectest.Seconds(p.Format.Duration); d < 2.5 || float64(got.Files[0].DurationMs)/1000 > d+0.1 {
		t.Errorf("recovered file plays %.2f s, listed %d ms", d, got.Files[0].DurationMs)
	}
	evs := e2.recordingEvents(rec.ID)
	if len(evs) != 1 || evs[0].Type != sfu.EventRecordingFailed || evs[0].Recording.Status != StatusFailed || len(evs[0].Recording.Files) != 1 {
		t.Errorf("events after restart: %v", types(evs))
	}
	// The recovered manifest is final: a second start reports nothing again.
	m2, _ := readManifest(filepath.Join(dst, ManifestName))
	if m2.Status != StatusFailed {
		t.Errorf("manifest on disk: %s", m2.Status)
	}
}

func TestAutoRecord(t *testing.T) {
	cfg := testConfig()
	cfg.Auto = []AutoRule{{Room: "cam-*", SegmentDuration: time.Hour}}
	e := newEnv(t, cfg, nil)
	video, audio := rectest.H264Opus(t, 6, 2)
	pub := e.publish("cam-7", "cam", 4*time.Second, true, video, audio)
	other := e.publish("lobby", "cam", 4*time.Second, true, video, audio)
	defer other.leave()
	var id string
	sfutest.WaitFor(t, "an auto recording", 10*time.Second, func() bool {
		for _, r := range e.rec.List("cam-7", "") {
			id = r.ID
			return r.Status == StatusActive
		}
		return false
	})
	pub.wait()
	pub.leave()
	final := e.waitStatus(id, 10*time.Second, (*Recording).Terminal)
	if final.Auto != "cam-*" || len(final.Files) != 1 {
		t.Fatalf("auto recording %+v", final)
	}
	if n := len(e.rec.List("lobby", "")); n != 0 {
		t.Errorf("%d recordings of a room no rule matches", n)
	}
}

func TestAPI(t *testing.T) {
	e := newEnv(t, testConfig(), nil)
	base := e.whipServer()
	video, audio := rectest.H264Opus(t, 6, 2)
	pub := e.publish("api", "cam", 4*time.Second, true, video, audio)
	defer pub.leave()
	call := func(method, path, body string, want int) string {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, b, want)
		}
		return string(b)
	}
	call("POST", "/v1/recordings", `{"room":"nope"}`, 404)
	call("POST", "/v1/recordings", `{"room":"api","format":"avi"}`, 400)
	call("POST", "/v1/recordings", `{"room":"api","segment":"-1s"}`, 400)
	out := call("POST", "/v1/recordings", `{"room":"api","participant":"cam"}`, 201)
	id := between(out, `"id": "`, `"`)
	call("POST", "/v1/recordings", `{"room":"api","participant":"cam"}`, 409)
	call("GET", "/v1/recordings/RC_doesnotexist123", "", 404)
	call("GET", "/v1/recordings/../etc", "", 404)
	e.waitStatus(id, 10*time.Second, func(r *Recording) bool { return r.Status == StatusActive })
	if !strings.Contains(call("GET", "/v1/recordings?room=api", "", 200), id) {
		t.Error("list misses the recording")
	}
	if !strings.Contains(call("GET", "/v1/status", "", 200), id) {
		t.Error("status misses the recording")
	}
	call("POST", "/v1/recordings/"+id+"/pause", "", 200)
	call("POST", "/v1/recordings/"+id+"/resume", "", 200)
	pub.wait()
	final := call("POST", "/v1/recordings/"+id+"/stop", "", 200)
	if !strings.Contains(final, `"status": "complete"`) {
		t.Fatalf("stop answered %s", final)
	}
	call("POST", "/v1/recordings/"+id+"/stop", "", 409)
	r, _ := e.rec.Get(id)
	name := filepath.Base(r.Files[0].Path)
	call("GET", "/v1/recordings/"+id+"/files/..%2Frecording.json", "", 404)
	req, _ := http.NewRequest("GET", base+"/v1/recordings/"+id+"/files/"+name, nil)
	req.Header.Set("Range", "bytes=100-199")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || len(body) != 100 || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 100-199/%d", r.Files[0].SizeBytes) {
		t.Errorf("range request: %d, %d bytes, %q", resp.StatusCode, len(body), resp.Header.Get("Content-Range"))
	}
	onDisk, _ := os.ReadFile(e.file(r, 0))
	if string(onDisk[100:200]) != string(body) {
		t.Error("range bytes differ from the file")
	}
}

func between(s, a, b string) string {
	_, rest, _ := strings.Cut(s, a)
	v, _, _ := strings.Cut(rest, b)
	return v
}

func TestRoomScopeOneFilePerParticipant(t *testing.T) {
	e := newEnv(t, testConfig(), nil)
	video, audio := rectest.H264Opus(t, 6, 2)
	a := e.publish("meet", "alice", 5*time.Second, true, video, audio)
	defer a.leave()
	b := e.publish("meet", "bob", 5*time.Second, false, video, audio)
	defer b.leave()
	rec, err := e.rec.Start(Request{Room: "meet"})
	if err != nil {
		t.Fatal(err)
	}
	a.wait()
	b.wait()
	final, err := e.rec.Stop(context.Background(), rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(final.Files) != 2 || final.Details[0].Participant == final.Details[1].Participant {
		t.Fatalf("files %+v", final.Details)
	}
	for i := range final.Files {
		if !strings.HasPrefix(final.Details[i].Name, final.Details[i].Participant+"_") {
			t.Errorf("file %s of %s", final.Details[i].Name, final.Details[i].Participant)
		}
		rectest.Verify(t, e.file(final, i), 0, "h264", "opus")
	}
}

func TestTrackScopeAndMaxDuration(t *testing.T) {
	e := newEnv(t, testConfig(), nil)
	video, audio := rectest.H264Opus(t, 6, 2)
	pub := e.publish("one", "cam", 6*time.Second, true, video, audio)
	defer pub.leave()
	rec, err := e.rec.Start(Request{Room: "one", Participant: "cam", Track: "audio", MaxDuration: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	final := e.waitStatus(rec.ID, 10*time.Second, (*Recording).Terminal)
	if final.Status != StatusComplete || final.Reason != ReasonMaxDuration || len(final.Files) != 1 {
		t.Fatalf("recording %s %q %d files", final.Status, final.Reason, len(final.Files))
	}
	p := rectest.Verify(t, e.file(final, 0), 0, "opus")
	if d := rectest.Seconds(p.Format.Duration); d < 2 || d > 3.5 {
		t.Errorf("a 3 s recording lasts %.2f s", d)
	}
}

// TestMalformedPacketsSkipped replaces packets of a real stream by malformed ones: the recording
// counts and skips them, resumes at the next keyframe and stays decodable.
func TestMalformedPacketsSkipped(t *testing.T) {
	e := newEnv(t, testConfig(), nil)
	video, audio := rectest.H264Opus(t, 6, 2)
	p, err := e.hub.Join("bad", sfu.ParticipantSpec{Identity: "cam", Kind: sfu.ParticipantRTSP})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(sfu.ReasonClientDisconnected, nil)
	vt, _ := p.Publish(sfu.TrackSpec{Codec: video.Codec, CacheGOP: true})
	at, _ := p.Publish(sfu.TrackSpec{Codec: audio.Codec})
	rec, err := e.rec.Start(Request{Room: "bad"})
	if err != nil {
		t.Fatal(err)
	}
	bad := [][]byte{{}, {0x00}, {0x1e, 1, 2}, {0x78, 0, 9, 1}, {0x7c}, {0x7c, 0x05, 1, 2}, {0x19, 0, 0}, {0xff, 0xff}}
	n := 0
	rectest.Feed(t, []*rectest.Track{video, audio}, 5*time.Second, nil, func(i int, pk *rtp.Packet) {
		n++
		payload := pk.Payload
		if n%37 == 0 {
			payload = bad[(n/37)%len(bad)]
		}
		tr := vt
		if i == 1 {
			tr = at
		}
		tr.WritePacket(&sfu.Packet{Header: pk.Header, Payload: payload, Keyframe: sfu.IsKeyframe(tr.Codec().Name, payload)})
	})
	final, err := e.rec.Stop(context.Background(), rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if final.Status != StatusComplete || len(final.Files) != 1 {
		t.Fatalf("recording %s with %d files", final.Status, len(final.Files))
	}
	rectest.Verify(t, e.file(final, 0), 0, "h264", "opus")
}
