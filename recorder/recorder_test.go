package recorder

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sluice-media/sluice/recorder/rectest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

func (e *env) file(r *Recording, i int) string {
	return filepath.Join(e.dir, filepath.FromSlash(r.Files[i].Path))
}

// recordSource is one way media reaches the hub, so that every ingest gets the same 30 s test:
// it publishes into the hub as participant identity of room for d and returns when the
// participant has tracks; wait blocks until the feed ended.
type recordSource func(t *testing.T, e *env, room, identity string, d time.Duration) (wait func())

// synthetic publishes H.264 with B-frames and Opus as an ingest would (sender reports set).
func synthetic(t *testing.T, e *env, room, identity string, d time.Duration) func() {
	video, audio := rectest.H264Opus(t, 31, 2)
	pub := e.publish(room, identity, d, true, video, audio)
	t.Cleanup(pub.leave)
	return pub.wait
}

// whip publishes H.264 (baseline, as browsers send) and Opus over WHIP from a pion peer.
func whip(t *testing.T, e *env, room, identity string, d time.Duration) func() {
	video, audio := rectest.H264Opus(t, 31, 0)
	url := e.whipServer()
	stop := rectest.WHIPPublish(t, url+"/whip/"+room, d, video, audio)
	t.Cleanup(stop)
	sfutest.WaitFor(t, "the WHIP publisher's tracks", 15*time.Second, func() bool {
		r := e.hub.Room(room)
		if r == nil {
			return false
		}
		for _, p := range r.Participants() {
			if len(p.Tracks()) == 2 {
				return true
			}
		}
		return false
	})
	return stop
}

// TestRecord30s records a source for 30 s in-process and checks the file as the issue demands.
// The end-to-end 30 s recordings of each ingest (WHIP, RTMP, RTSP) through the daemon are in
// cmd/sluice (TestRecord30s there); this one covers B-frames from an ingest-like publisher.
func TestRecord30s(t *testing.T) {
	if testing.Short() {
		t.Skip("30 s recordings")
	}
	for _, tc := range []struct {
		name   string
		src    recordSource
		codecs []string
	}{
		{"synthetic-bframes", synthetic, []string{"h264", "opus"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, testConfig(), nil)
			const d = 30 * time.Second
			begin := time.Now()
			wait := tc.src(t, e, "room-"+tc.name, "pub", d)
			rec, err := e.rec.Start(Request{Room: "room-" + tc.name})
			if err != nil {
				t.Fatal(err)
			}
			wait()
			final, err := e.rec.Stop(context.Background(), rec.ID)
			if err != nil {
				t.Fatal(err)
			}
			if final.Status != StatusComplete || len(final.Files) != 1 {
				t.Fatalf("recording %s with %d files, want complete with 1", final.Status, len(final.Files))
			}
			wall := final.EndedAt.Sub(*final.StartedAt)
			if wall < d-3*time.Second || wall > time.Since(begin) {
				t.Errorf("recorded span %v for a %v feed", wall, d)
			}
			rectest.Verify(t, e.file(final, 0), wall, tc.codecs...)
			evs := e.recordingEvents(rec.ID)
			want := []string{"recording.updated starting requested", "recording.started active requested",
				"recording.updated ending stopped", "recording.ended complete stopped"}
			if got := transitions(evs); !slices.Equal(got, want) {
				t.Errorf("events %v, want %v", got, want)
			}
		})
	}
}

func types(evs []sfu.Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Type)
	}
	return out
}

// TestRecordWHIP records a pion WHIP publisher in-process.
func TestRecordWHIP(t *testing.T) {
	e := newEnv(t, testConfig(), nil)
	wait := whip(t, e, "web", "pub", 8*time.Second)
	rec, err := e.rec.Start(Request{Room: "web"})
	if err != nil {
		t.Fatal(err)
	}
	wait()
	final, err := e.rec.Stop(context.Background(), rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if final.Status != StatusComplete || len(final.Files) != 1 {
		t.Fatalf("recording %s with %d files", final.Status, len(final.Files))
	}
	rectest.Verify(t, e.file(final, 0), final.EndedAt.Sub(*final.StartedAt), "h264", "opus")
}

func TestRecordShort(t *testing.T) {
	e := newEnv(t, testConfig(), nil)
	video, audio := rectest.H264Opus(t, 6, 2)
	pub := e.publish("cam", "cam1", 5*time.Second, true, video, audio)
	defer pub.leave()
	rec, err := e.rec.Start(Request{Room: "cam"})
	if err != nil {
		t.Fatal(err)
	}
	pub.wait()
	final, err := e.rec.Stop(context.Background(), rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if final.Status != StatusComplete || len(final.Files) != 1 {
		t.Fatalf("recording %+v", final)
	}
	rectest.Verify(t, e.file(final, 0), 0, "h264", "opus")
}
