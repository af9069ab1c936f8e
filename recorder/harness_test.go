package recorder

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/sluice-media/sluice/recorder/rectest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// env is a hub and a recorder running in-process.
type env struct {
	t      *testing.T
	hub    *sfu.Hub
	events *sfu.LocalEmitter
	rec    *Recorder
	dir    string
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// storage is the recorder's storage section (set before startRecorder).
	storage StorageConfig
	// stopRecorder stops the current recorder and waits for it (idempotent).
	stopRecorder func()
}

func testConfig() Config {
	c := DefaultConfig()
	c.Grace = 2 * time.Second
	return c
}

func newEnv(t *testing.T, cfg Config, fs FS) *env {
	t.Helper()
	return newEnvStorage(t, cfg, fs, StorageConfig{})
}

// newEnvStorage is newEnv with object storage targets.
func newEnvStorage(t *testing.T, cfg Config, fs FS, storage StorageConfig) *env {
	t.Helper()
	hub, em := sfutest.NewHub(t, nil)
	e := &env{t: t, hub: hub, events: em, dir: filepath.Join(t.TempDir(), "recordings"), storage: storage}
	if d := os.Getenv("KEEP_DIR"); d != "" { // keep the files of a failing test to look at
		e.dir = filepath.Join(d, t.Name())
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.wg.Add(1)
	go func() { defer e.wg.Done(); _ = hub.Run(ctx) }()
	e.startRecorder(cfg, fs)
	t.Cleanup(e.close)
	return e
}

func (e *env) startRecorder(cfg Config, fs FS) {
	e.t.Helper()
	r, err := New(Options{Config: cfg, Dir: e.dir, Hub: e.hub, FS: fs, Logger: testLogger(e.t), Storage: e.storage})
	if err != nil {
		e.t.Fatal(err)
	}
	e.rec = r
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	prev := e.cancel
	e.stopRecorder = func() { cancel(); <-done }
	e.cancel = func() {
		cancel()
		<-done
		prev()
	}
}

func (e *env) close() {
	e.cancel()
	e.wg.Wait()
}

// events returns the recording events of one recording.
func (e *env) recordingEvents(id string) []sfu.Event {
	var out []sfu.Event
	for _, ev := range e.events.Events(0) {
		if ev.Recording != nil && ev.Recording.ID == id {
			out = append(out, ev)
		}
	}
	return out
}

func (e *env) waitStatus(id string, d time.Duration, ok func(*Recording) bool) *Recording {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for {
		r, err := e.rec.Get(id)
		if err != nil {
			e.t.Fatal(err)
		}
		if ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %v waiting on recording %s (status %s, %d files)", d, id, r.Status, len(r.Files))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// publisher is a participant publishing real media into the hub, as an ingest would.
type publisher struct {
	p      *sfu.Participant
	tracks []*sfu.Track
	stop   chan struct{}
	done   chan struct{}
}

// publish joins room as identity, publishes the sources' tracks (with a sender report, as the
// RTMP and RTSP ingests set) and feeds them in real time for d.
func (e *env) publish(room, identity string, d time.Duration, withSR bool, srcs ...*rectest.Track) *publisher {
	e.t.Helper()
	p, err := e.hub.Join(room, sfu.ParticipantSpec{Identity: identity, Kind: sfu.ParticipantRTMP})
	if err != nil {
		e.t.Fatal(err)
	}
	pub := &publisher{p: p, stop: make(chan struct{}), done: make(chan struct{})}
	for _, s := range srcs {
		tr, err := p.Publish(sfu.TrackSpec{Codec: s.Codec, CacheGOP: true})
		if err != nil {
			e.t.Fatal(err)
		}
		if withSR {
			tr.SetSenderReport(sfu.SenderReport{RTPTime: 1000, NTPTime: time.Now()})
		}
		pub.tracks = append(pub.tracks, tr)
	}
	go func() {
		defer close(pub.done)
		if withSR { // the sender report times the first packet: restate it at the real start
			for _, tr := range pub.tracks {
				tr.SetSenderReport(sfu.SenderReport{RTPTime: 1000, NTPTime: time.Now()})
			}
		}
		rectest.Feed(e.t, srcs, d, pub.stop, func(i int, pk *rtp.Packet) {
			tr := pub.tracks[i]
			tr.WritePacket(&sfu.Packet{Header: pk.Header, Payload: pk.Payload, Keyframe: sfu.IsKeyframe(tr.Codec().Name, pk.Payload)})
		})
	}()
	return pub
}

// wait waits for the feed to end.
func (p *publisher) wait() { <-p.done }

// leave ends the feed and the participant.
func (p *publisher) leave() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
	p.p.Close(sfu.ReasonClientDisconnected, nil)
}

// testLogger writes the recorder's log to the test log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
