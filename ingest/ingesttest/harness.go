// Package ingesttest is the test daemon core of the ingest servers (RTMP, SRT): a hub, an
// ingest store and a gate on loopback, with waits on the events it emits and helpers to run
// real peers (ffmpeg, srt-live-transmit) that end with the test.
package ingesttest

import (
	"context"
	"encoding/json"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// Options shape a Harness.
type Options struct {
	// Auth configures the gate: no keys is open mode.
	Auth auth.Config
	// StatsInterval is the stream.stats period (0: none).
	StatsInterval time.Duration
}

// Harness is a hub (housekeeping every 50 ms), an ingest store in a temporary directory and a
// gate, with the events in memory and the logs in a buffer. New starts nothing; Serve runs the
// hub and the server under test until Close, which the test's cleanup calls.
type Harness struct {
	T      testing.TB
	Hub    *sfu.Hub
	Events *sfu.LocalEmitter
	Store  *ingest.Store
	Gate   *api.Gate
	Logs   *sfutest.Buffer
	Log    *slog.Logger

	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closed  sync.Once
	onClose []func()
}

// New makes the core of a test daemon.
func New(t testing.TB, o Options) *Harness {
	t.Helper()
	logs := &sfutest.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	em := sfu.NewLocalEmitter(0, nil)
	hub, err := sfu.NewHub(sfu.Options{Config: sfu.DefaultConfig(), Emitter: em, Tick: 50 * time.Millisecond, StatsInterval: o.StatsInterval})
	Must(t, err)
	store, err := ingest.Open(t.TempDir(), nil, em, log)
	Must(t, err)
	return &Harness{T: t, Hub: hub, Events: em, Store: store, Gate: api.NewGate(auth.NewVerifier(o.Auth, nil), em), Logs: logs, Log: log}
}

// Server is what Serve runs: an ingest server whose sockets are bound.
type Server interface {
	Run(ctx context.Context) error
	Close() error
}

// Serve runs the hub and srv until Close (the test's cleanup), which then closes srv and fails
// the test if the server counted panics in its session code (bugs).
func (h *Harness) Serve(srv Server, panics *atomic.Uint64) {
	h.OnClose(func() {
		_ = srv.Close()
		if n := panics.Load(); n > 0 {
			h.T.Errorf("%d panics in the session code", n)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.wg.Add(2)
	go func() { defer h.wg.Done(); _ = h.Hub.Run(ctx) }()
	go func() {
		defer h.wg.Done()
		if err := srv.Run(ctx); err != nil {
			h.T.Errorf("server: %v", err)
		}
	}()
	h.T.Cleanup(h.Close)
}

// OnClose adds a check or a release to Close, run after the server and the hub have stopped.
func (h *Harness) OnClose(f func()) { h.onClose = append(h.onClose, f) }

// Close stops the server and the hub and waits for them (idempotent); a failed test gets the
// tail of the log.
func (h *Harness) Close() {
	h.closed.Do(func() {
		if h.cancel != nil {
			h.cancel()
		}
		h.wg.Wait()
		for _, f := range h.onClose {
			f()
		}
		if h.T.Failed() {
			h.T.Logf("server log:\n%s", Tail(h.Logs.String(), 60))
		}
	})
}

// WaitEvent waits up to d for an event that matches and returns it.
func (h *Harness) WaitEvent(what string, d time.Duration, match func(e sfu.Event) bool) sfu.Event {
	h.T.Helper()
	deadline := time.Now().Add(d)
	for {
		for _, e := range h.Events.Events(0) {
			if match(e) {
				return e
			}
		}
		if time.Now().After(deadline) {
			h.T.Fatalf("timed out after %v waiting for %s; events:\n%s", d, what, h.EventList())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Has reports whether an event matches.
func (h *Harness) Has(match func(e sfu.Event) bool) bool {
	for _, e := range h.Events.Events(0) {
		if match(e) {
			return true
		}
	}
	return false
}

// EventList is the events so far, one a line, for failure messages.
func (h *Harness) EventList() string {
	var b strings.Builder
	for _, e := range h.Events.Events(0) {
		b.WriteString(e.Type)
		if e.Participant != nil {
			b.WriteString(" " + e.Participant.Identity)
		}
		if e.Reason != "" {
			b.WriteString(" reason=" + e.Reason)
		}
		if e.Error != nil {
			b.WriteString(" error=" + e.Error.Code + ": " + e.Error.Message)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// AuthFailures returns the auth.failed events so far.
func (h *Harness) AuthFailures() []sfu.Event {
	var out []sfu.Event
	for _, e := range h.Events.Events(0) {
		if e.Type == sfu.EventAuthFailed {
			out = append(out, e)
		}
	}
	return out
}

// SecretsAbsent fails the test if a secret appears in any event or log line.
func (h *Harness) SecretsAbsent(secrets ...string) {
	h.T.Helper()
	raw, _ := json.Marshal(h.Events.Events(0))
	logs := h.Logs.String()
	for _, s := range secrets {
		if strings.Contains(string(raw), s) || strings.Contains(logs, s) {
			h.T.Errorf("a secret reached the events or the log")
		}
	}
}

// Participant waits for identity to be in room and returns it.
func (h *Harness) Participant(room, identity string) *sfu.Participant {
	h.T.Helper()
	var p *sfu.Participant
	sfutest.WaitFor(h.T, "participant "+identity, 20*time.Second, func() bool {
		if r := h.Hub.Room(room); r != nil {
			p = r.Participant(identity)
		}
		return p != nil
	})
	return p
}

// Is matches events of a type (and of a participant, unless identity is "").
func Is(typ, identity string) func(e sfu.Event) bool {
	return func(e sfu.Event) bool {
		return e.Type == typ && (identity == "" || (e.Participant != nil && e.Participant.Identity == identity))
	}
}

// IsReason matches events of a type, participant and reason.
func IsReason(typ, identity, reason string) func(e sfu.Event) bool {
	return func(e sfu.Event) bool { return Is(typ, identity)(e) && e.Reason == reason }
}

// TrackOf waits for the participant's track of kind.
func TrackOf(t testing.TB, p *sfu.Participant, kind sfu.Kind) *sfu.Track {
	t.Helper()
	var tr *sfu.Track
	sfutest.WaitFor(t, string(kind)+" track", 20*time.Second, func() bool {
		for _, x := range p.Tracks() {
			if x.Kind() == kind {
				tr = x
			}
		}
		return tr != nil
	})
	return tr
}

// Start runs a command (which must be installed: sfutest.RequireTool) in its own process group,
// killed whole when the test ends; exited closes when it has exited.
func Start(t testing.TB, out *sfutest.Buffer, name string, args ...string) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	cmd := exec.Command(sfutest.RequireTool(t, name), args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a shell pipeline dies whole
	Must(t, cmd.Start())
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	return cmd, exited
}

// Must fails the test on an error.
func Must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Tail returns the last lines of s.
func Tail(s string, lines int) string {
	all := strings.Split(s, "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}
