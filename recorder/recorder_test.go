package recorder

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
)

func (e *env) file(r *Recording, i int) string {
	return filepath.Join(e.dir, filepath.FromSlash(r.Files[i].Path))
}

func TestRecordShort(t *testing.T) {
	e := newEnv(t, testConfig(), nil)
	video, audio := h264OpusSource(t, 6, 2)
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
	t.Logf("file %s", e.file(final, 0))
	verifyFile(t, e.file(final, 0), 0, "h264", "opus")
	t.Logf("%+v", final.Files)
	_ = sfu.EventRecordingEnded
}
