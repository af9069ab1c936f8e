package recorder

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/sluice-media/sluice/recorder/rectest"
	"github.com/sluice-media/sluice/sfu"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{{"", 0, true}, {"500", 500, true}, {"10MB", 10e6, true}, {"2GiB", 2 << 30, true}, {"1 kb", 1000, true}, {"-1GB", 0, false}, {"1.5GB", 0, false}, {"GB", 0, false}, {"3 parsecs", 0, false}} {
		got, err := ParseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v", tc.in, got, err)
		}
	}
}

// TestRetentionBySize records three recordings on a real directory while a fourth is still
// running, and caps the total size: the oldest go first, each with recording.deleted, and the
// active one stays however large the total.
func TestRetentionBySize(t *testing.T) {
	cfg := testConfig()
	e := newEnv(t, cfg, nil)
	video, audio := rectest.H264Opus(t, 4, 2)
	var done []*Recording
	for range 3 {
		done = append(done, e.record(t, "keep", 2*time.Second, Request{}, video, audio))
	}
	// A running recording in another room.
	long, longA := rectest.H264Opus(t, 20, 2)
	pub := e.publish("live", "cam", 20*time.Second, true, long, longA)
	defer pub.leave()
	active, err := e.rec.Start(Request{Room: "live"})
	if err != nil {
		t.Fatal(err)
	}
	e.waitStatus(active.ID, 10*time.Second, func(r *Recording) bool { return r.SizeBytes > 0 })

	before := len(e.events.Events(0))
	// Room for the newest ended recording and the active one: the two older ones go.
	e.rec.cfg.Retention.MaxBytes = strconv.FormatInt(done[2].SizeBytes+sizeOf(e, "live")+done[1].SizeBytes/2, 10)
	n := e.rec.Sweep()
	var deleted []string
	for _, ev := range e.events.Events(0)[before:] {
		if ev.Type == sfu.EventRecordingDeleted {
			if ev.Reason != ReasonRetentionSize {
				t.Errorf("reason %q", ev.Reason)
			}
			deleted = append(deleted, ev.Recording.ID)
		}
	}
	if n != 2 || len(deleted) != 2 || deleted[0] != done[0].ID || deleted[1] != done[1].ID {
		t.Fatalf("deleted %d: %v (oldest first: %s %s)", n, deleted, done[0].ID, done[1].ID)
	}
	for i, r := range done {
		_, err := os.Stat(filepath.Join(e.dir, "keep", r.ID))
		if gone := errors.Is(err, os.ErrNotExist); gone != (i < 2) {
			t.Errorf("recording %d: directory gone %v", i, gone)
		}
		if _, err := e.rec.Get(r.ID); (err != nil) != (i < 2) {
			t.Errorf("recording %d: in the catalogue: %v", i, err)
		}
	}
	// A cap below the active recording alone never touches it.
	e.rec.cfg.Retention.MaxBytes = "1"
	e.rec.Sweep()
	got, err := e.rec.Get(active.ID)
	if err != nil || got.Terminal() {
		t.Fatalf("active recording after a sweep: %v %+v", err, got)
	}
	if _, err := e.rec.Delete(active.ID, ReasonRequested); !errors.Is(err, ErrConflict) {
		t.Errorf("deleting an active recording: %v", err)
	}
	if _, err := e.rec.Stop(context.Background(), active.ID); err != nil {
		t.Fatal(err)
	}
}

// sizeOf is the size of the recordings of a room.
func sizeOf(e *env, room string) int64 {
	var n int64
	for _, r := range e.rec.List(room, "") {
		n += r.SizeBytes
	}
	return n
}

// TestRetentionByAgeAndDisk deletes by age per room glob, and by free disk (injected).
func TestRetentionByAgeAndDisk(t *testing.T) {
	cfg := testConfig()
	e := newEnv(t, cfg, nil)
	video, audio := rectest.H264Opus(t, 4, 2)
	a := e.record(t, "cam-1", 2*time.Second, Request{}, video, audio)
	b := e.record(t, "other", 2*time.Second, Request{}, video, audio)
	c := e.record(t, "other", 2*time.Second, Request{}, video, audio)
	e.rec.cfg.Retention = RetentionConfig{Rooms: []RoomRetention{{Room: "cam-*", MaxAge: time.Minute}}}
	if n := e.rec.Sweep(); n != 0 {
		t.Fatalf("deleted %d recordings younger than the limit", n)
	}
	e.rec.clock = func() time.Time { return time.Now().Add(2 * time.Minute) }
	if n := e.rec.Sweep(); n != 1 {
		t.Fatalf("age: deleted %d", n)
	}
	if _, err := e.rec.Get(a.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("cam-1 recording past max_age: %v", err)
	}
	free := int64(100)
	e.rec.free = func(string) (int64, error) { return free, nil }
	e.rec.cfg.Retention = RetentionConfig{MinFree: "150"}
	var gone []string
	e.rec.emit = sfu.EmitterFunc(func(ev *sfu.Event) {
		if ev.Type == sfu.EventRecordingDeleted && ev.Reason == ReasonRetentionDisk {
			gone = append(gone, ev.Recording.ID)
			free += 60
		}
	})
	e.rec.Sweep()
	if len(gone) != 1 || gone[0] != b.ID {
		t.Fatalf("disk: deleted %v, want the oldest (%s) only", gone, b.ID)
	}
	if _, err := e.rec.Get(c.ID); err != nil {
		t.Errorf("newest recording deleted: %v", err)
	}
}
