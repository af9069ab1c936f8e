package srt

import (
	"context"
	"encoding/json"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// harness is a hub, an ingest store and an SRT server on a loopback port.
type harness struct {
	t      *testing.T
	hub    *sfu.Hub
	events *sfu.LocalEmitter
	store  *ingest.Store
	srv    *Server
	addr   string
	logs   *sfutest.Buffer
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed sync.Once
}

type harnessOptions struct {
	config func(*Config)
	auth   auth.Config
	stats  time.Duration // stream.stats period (0: none)
}

func newHarness(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	em := sfu.NewLocalEmitter(0, nil)
	hub, err := sfu.NewHub(sfu.Options{Config: sfu.DefaultConfig(), Emitter: em, Tick: 50 * time.Millisecond, StatsInterval: o.stats})
	must(t, err)
	logs := &sfutest.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	store, err := ingest.Open(t.TempDir(), nil, em, log)
	must(t, err)
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	if o.config != nil {
		o.config(&cfg)
	}
	srv, err := NewServer(Options{Config: cfg, Hub: hub, Gate: api.NewGate(auth.NewVerifier(o.auth, nil), em), Ingests: store, Logger: log})
	must(t, err)
	must(t, srv.Listen())
	store.Register(ingest.TypeSRT, srv)
	h := &harness{t: t, hub: hub, events: em, store: store, srv: srv, addr: srv.Addr().String(), logs: logs}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.wg.Add(2)
	go func() { defer h.wg.Done(); _ = hub.Run(ctx) }()
	go func() { defer h.wg.Done(); _ = srv.Run(ctx) }()
	t.Cleanup(h.close)
	return h
}

func (h *harness) close() {
	h.closed.Do(func() {
		h.cancel()
		h.wg.Wait()
		_ = h.srv.Close()
		if n := h.srv.panics.Load(); n > 0 {
			h.t.Errorf("%d panics in the srt session code", n)
		}
		if h.t.Failed() {
			h.t.Logf("server log:\n%s", tail(h.logs.String(), 60))
		}
	})
}

// waitEvent waits for an event that matches and returns it.
func (h *harness) waitEvent(what string, d time.Duration, match func(e sfu.Event) bool) sfu.Event {
	h.t.Helper()
	var found sfu.Event
	sfutest.WaitFor(h.t, what, d, func() bool {
		for _, e := range h.events.Events(0) {
			if match(e) {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

// secretsAbsent fails the test if a secret appears in any event or log line.
func (h *harness) secretsAbsent(secrets ...string) {
	h.t.Helper()
	raw, _ := json.Marshal(h.events.Events(0))
	logs := h.logs.String()
	for _, s := range secrets {
		if strings.Contains(string(raw), s) || strings.Contains(logs, s) {
			h.t.Errorf("a secret reached the events or the log")
		}
	}
}

func is(typ, identity string) func(e sfu.Event) bool {
	return func(e sfu.Event) bool {
		return e.Type == typ && (identity == "" || (e.Participant != nil && e.Participant.Identity == identity))
	}
}

// participant waits for identity to be in room and returns it.
func (h *harness) participant(room, identity string) *sfu.Participant {
	h.t.Helper()
	var p *sfu.Participant
	sfutest.WaitFor(h.t, "participant "+identity, 20*time.Second, func() bool {
		if r := h.hub.Room(room); r != nil {
			p = r.Participant(identity)
		}
		return p != nil
	})
	return p
}

// trackOf waits for the participant's track of kind.
func trackOf(t *testing.T, p *sfu.Participant, kind sfu.Kind) *sfu.Track {
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

// frames records the RTP timestamps of a video subscription's complete frames (marker bit)
// and whether each started with a keyframe.
type frames struct {
	mu   sync.Mutex
	ts   []uint32
	keys int
}

func (f *frames) WritePacket(p *sfu.Packet, _ bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p.Keyframe {
		f.keys++
	}
	if p.Header.Marker {
		f.ts = append(f.ts, p.Header.Timestamp)
	}
	return nil
}

func (f *frames) snapshot() ([]uint32, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]uint32(nil), f.ts...), f.keys
}

// start runs a command that is killed when the test ends; exited closes when it has exited.
func start(t *testing.T, out *sfutest.Buffer, name string, args ...string) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	cmd := exec.Command(sfutest.RequireTool(t, name), args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a shell pipeline dies whole
	must(t, cmd.Start())
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	return cmd, exited
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func tail(s string, lines int) string {
	all := strings.Split(s, "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}
