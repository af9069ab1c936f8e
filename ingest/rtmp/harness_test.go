package rtmp

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// harness is a hub, an ingest store and an RTMP server on a loopback port.
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
}

func newHarness(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	hub, em := sfutest.NewHub(t, nil)
	logs := &sfutest.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	store, err := ingest.Open(t.TempDir(), nil, em, log)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.RTMPSListen = "127.0.0.1:0"
	if o.config != nil {
		o.config(&cfg)
	}
	srv, err := NewServer(Options{Config: cfg, Hub: hub, Gate: api.NewGate(auth.NewVerifier(o.auth, nil), em), Ingests: store, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	store.Register(ingest.TypeRTMP, srv)
	h := &harness{t: t, hub: hub, events: em, store: store, srv: srv, addr: srv.Addr().String(), logs: logs}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.wg.Add(2)
	go func() { defer h.wg.Done(); _ = hub.Run(ctx) }()
	go func() { defer h.wg.Done(); _ = srv.Run(ctx) }()
	t.Cleanup(h.close)
	return h
}

// close stops the server and the hub (idempotent; also a cleanup of the test).
func (h *harness) close() { h.closed.Do(h.doClose) }

func (h *harness) doClose() {
	h.cancel()
	h.wg.Wait()
	_ = h.srv.Close()
	if n := h.srv.panics.Load(); n > 0 {
		h.t.Errorf("%d panics in the rtmp session code:\n%s", n, h.logs.String())
	}
	if h.t.Failed() {
		h.t.Logf("server log:\n%s", tail(h.logs.String(), 60))
	}
}

// waitEvent waits for an event that matches and returns it.
func (h *harness) waitEvent(what string, d time.Duration, match func(e sfu.Event) bool) sfu.Event {
	h.t.Helper()
	deadline := time.Now().Add(d)
	for {
		for _, e := range h.events.Events(0) {
			if match(e) {
				return e
			}
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out after %v waiting for %s; events:\n%s", d, what, h.eventList())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// has reports whether an event matches.
func (h *harness) has(match func(e sfu.Event) bool) bool {
	for _, e := range h.events.Events(0) {
		if match(e) {
			return true
		}
	}
	return false
}

func (h *harness) eventList() string {
	var b strings.Builder
	for _, e := range h.events.Events(0) {
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

func isReason(typ, identity, reason string) func(e sfu.Event) bool {
	return func(e sfu.Event) bool { return is(typ, identity)(e) && e.Reason == reason }
}

// participant waits for identity to be in room and returns it.
func (h *harness) participant(room, identity string) *sfu.Participant {
	h.t.Helper()
	var p *sfu.Participant
	sfutest.WaitFor(h.t, "participant "+identity, 10*time.Second, func() bool {
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
	sfutest.WaitFor(t, string(kind)+" track", 10*time.Second, func() bool {
		for _, x := range p.Tracks() {
			if x.Kind() == kind {
				tr = x
			}
		}
		return tr != nil
	})
	return tr
}

// packets counts a track's packets as it flows (the check that a session is untouched).
func packetsOf(t *sfu.Track) uint64 {
	var n uint64
	for _, st := range t.Participant().Room().Status().Participants {
		for _, tr := range st.Tracks {
			if tr.SID == t.SID() {
				n = tr.PacketsIn
			}
		}
	}
	return n
}

// flowing fails unless the track receives packets within d.
func flowing(t *testing.T, tr *sfu.Track, d time.Duration) {
	t.Helper()
	start := packetsOf(tr)
	sfutest.WaitFor(t, "packets on "+tr.SID(), d, func() bool { return packetsOf(tr) > start+10 })
}

func tail(s string, lines int) string {
	all := strings.Split(s, "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// sink records the packets of a subscription.
type sink struct {
	mu   sync.Mutex
	pkts []*sfu.Packet
}

func (s *sink) WritePacket(p *sfu.Packet, _ bool) error {
	s.mu.Lock()
	s.pkts = append(s.pkts, p)
	s.mu.Unlock()
	return nil
}

func (s *sink) all() []*sfu.Packet {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*sfu.Packet(nil), s.pkts...)
}
