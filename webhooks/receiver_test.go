package webhooks

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
)

// receiver is a real HTTP webhook endpoint on loopback that verifies every signature and
// records what it got. answer decides the status of each request (nil: 204).
type receiver struct {
	t      testing.TB
	srv    *httptest.Server
	secret string
	signer *Signer

	mu       sync.Mutex
	got      []received
	attempts map[string]int // by webhook-id
	bad      int            // requests whose signature did not verify
	answer   func(ev *sfu.Event, attempt int) int
}

type received struct {
	ev      sfu.Event
	at      time.Time
	attempt int
	status  int
}

func newReceiver(t testing.TB, answer func(ev *sfu.Event, attempt int) int) *receiver {
	t.Helper()
	r := &receiver{t: t, secret: NewSecret(), attempts: map[string]int{}, answer: answer}
	r.signer, _ = NewSigner(r.secret)
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return
	}
	r.mu.Lock()
	signer := r.signer
	r.mu.Unlock()
	if err := signer.Verify(req.Header, body, time.Now(), DefaultTolerance); err != nil {
		r.mu.Lock()
		r.bad++
		r.mu.Unlock()
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var ev sfu.Event
	if err := json.Unmarshal(body, &ev); err != nil || ev.ID != req.Header.Get(HeaderID) {
		r.mu.Lock()
		r.bad++
		r.mu.Unlock()
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.attempts[ev.ID]++
	attempt := r.attempts[ev.ID]
	answer := r.answer
	r.mu.Unlock()
	status := http.StatusNoContent
	if answer != nil {
		status = answer(&ev, attempt)
	}
	r.mu.Lock()
	r.got = append(r.got, received{ev: ev, at: time.Now(), attempt: attempt, status: status})
	r.mu.Unlock()
	w.WriteHeader(status)
}

// delivered returns the events answered with a 2xx, in arrival order.
func (r *receiver) delivered() []sfu.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []sfu.Event
	for _, g := range r.got {
		if g.status/100 == 2 {
			out = append(out, g.ev)
		}
	}
	return out
}

func (r *receiver) count(pred func(received) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, g := range r.got {
		if pred(g) {
			n++
		}
	}
	return n
}

func (r *receiver) badSignatures() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bad
}

func (r *receiver) setSecret(secret string) {
	r.mu.Lock()
	r.secret = secret
	r.signer, _ = NewSigner(secret)
	r.mu.Unlock()
}

// checkOrder fails the test unless each room's first deliveries come in seq order.
func checkOrder(t testing.TB, evs []sfu.Event) {
	t.Helper()
	last := map[string]uint64{}
	seen := map[string]bool{}
	for _, ev := range evs {
		if seen[ev.ID] {
			continue
		}
		seen[ev.ID] = true
		room := ev.RoomName()
		if ev.Seq <= last[room] {
			t.Fatalf("room %q: seq %d delivered after %d", room, ev.Seq, last[room])
		}
		last[room] = ev.Seq
	}
}

// startDeliverer runs a deliverer over l until the end of the test.
func startDeliverer(t testing.TB, l *Log, cfg Config, mod func(*DeliveryOptions)) *Deliverer {
	t.Helper()
	opts := DeliveryOptions{Config: cfg, Log: l, CursorInterval: 50 * time.Millisecond}
	if mod != nil {
		mod(&opts)
	}
	d, err := NewDeliverer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return d
}

func testConfig(eps ...EndpointConfig) Config {
	cfg := DefaultConfig()
	cfg.Endpoints = eps
	cfg.Timeout = 5 * time.Second
	cfg.RetrySchedule = []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}
	return cfg
}

func roomEvent(typ, room string) *sfu.Event {
	return &sfu.Event{Type: typ, Room: &sfu.RoomInfo{Name: room, SID: "RM_" + room}}
}
