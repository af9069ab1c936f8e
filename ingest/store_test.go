package ingest

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
)

type recordingHandler struct {
	mu      sync.Mutex
	started []string
	stopped []string
}

func (h *recordingHandler) Start(ing Ingest) {
	h.mu.Lock()
	h.started = append(h.started, ing.ID)
	h.mu.Unlock()
}
func (h *recordingHandler) Stop(id string) {
	h.mu.Lock()
	h.stopped = append(h.stopped, id)
	h.mu.Unlock()
}

func TestStoreLifecycle(t *testing.T) {
	dir := t.TempDir()
	em := sfu.NewLocalEmitter(0, nil)
	cam := Definition{ID: "door", Type: TypeRTSPPull, Room: "door", URL: "rtsp://admin:hunter2secret@10.0.0.5/stream1"}
	s, err := Open(dir, []Definition{cam}, em, nil)
	if err != nil {
		t.Fatal(err)
	}
	pull, push := &recordingHandler{}, &recordingHandler{}
	s.Register(TypeRTSPPull, pull)
	s.Register(TypeRTMP, push)
	if len(pull.started) != 1 || pull.started[0] != "door" {
		t.Fatalf("the config's camera was not started: %v", pull.started)
	}

	obs, err := s.Create(Definition{Type: TypeRTMP, Room: "studio", Identity: "obs"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(obs.StreamKey, "sk_") || len(obs.StreamKey) != 27 || obs.State != StateIdle {
		t.Fatalf("created %+v", obs)
	}
	if got, ok := s.ByStreamKey(obs.StreamKey); !ok || got.ID != obs.ID {
		t.Fatal("stream key lookup failed")
	}
	if _, ok := s.ByStreamKey(obs.StreamKey[:len(obs.StreamKey)-1]); ok {
		t.Fatal("a prefix of the key matched")
	}
	if len(push.started) != 1 {
		t.Fatal("the handler did not see the new ingest")
	}
	if _, err := s.Create(Definition{Type: TypeRTMP, Room: "../x"}, time.Now()); !errors.As(err, new(*InvalidError)) {
		t.Fatalf("invalid room: %v", err)
	}
	if _, err := s.Create(Definition{ID: "door", Type: TypeRTMP, Room: "x"}, time.Now()); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate id: %v", err)
	}

	s.SetState(obs.ID, StateConnected, 0, "", nil)
	s.SetState(obs.ID, StateConnected, 0, "", nil) // no change, no event
	s.SetState("door", StateReconnecting, 3, "error", errors.New("connection refused"))

	// Persisted across a restart, config ingests not written, secrets only in the 0600 file.
	raw, err := os.ReadFile(filepath.Join(dir, "ingests.json"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "door") || !strings.Contains(string(raw), obs.StreamKey) {
		t.Fatalf("persisted file: %s", raw)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "ingests.json")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	s2, err := Open(dir, []Definition{cam}, em, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := s2.ByStreamKey(obs.StreamKey); !ok || got.Room != "studio" || got.State != StateIdle {
		t.Fatalf("after reopen: %+v %v", got, ok)
	}

	if err := s.Delete("door"); !errors.Is(err, ErrFromConfig) {
		t.Fatalf("deleting a config ingest: %v", err)
	}
	if err := s.Delete(obs.ID); err != nil {
		t.Fatal(err)
	}
	if len(push.stopped) != 1 || push.stopped[0] != obs.ID {
		t.Fatal("delete did not stop the live session first")
	}
	if _, ok := s.ByStreamKey(obs.StreamKey); ok {
		t.Fatal("a deleted key still works")
	}
	if err := s.Delete(obs.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}

	var types []string
	for _, e := range em.Events(0) {
		types = append(types, e.Type)
		raw, _ := json.Marshal(e)
		if strings.Contains(string(raw), obs.StreamKey) || strings.Contains(string(raw), "hunter2secret") {
			t.Fatalf("a secret reached an event: %s", raw)
		}
		if e.Type == sfu.EventIngestStateChanged && e.Ingest.ID == "door" {
			if e.PrevState != StateIdle || e.Error == nil || e.Ingest.Retries != 3 || e.Ingest.URL != "rtsp://***@10.0.0.5/stream1" {
				t.Fatalf("state change event %+v %+v", e, e.Ingest)
			}
		}
	}
	want := "ingest.created ingest.state_changed ingest.state_changed ingest.deleted"
	if strings.Join(types, " ") != want {
		t.Fatalf("events %v", types)
	}
}

func TestCorruptFileIsAnError(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ingests.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, nil, sfu.NewLocalEmitter(0, nil), nil); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("err = %v", err)
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"rtsp://user:pass@cam/stream": "rtsp://***@cam/stream",
		"rtsp://cam:554/s":            "rtsp://cam:554/s",
		"":                            "",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
