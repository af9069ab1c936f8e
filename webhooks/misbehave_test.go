package webhooks

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// rawReceiver is a webhook endpoint that misbehaves as its handler says; it records when each
// request arrived.
type rawReceiver struct {
	srv  *httptest.Server
	mu   sync.Mutex
	hits []time.Time
}

func newRawReceiver(t *testing.T, h func(w http.ResponseWriter, r *http.Request, attempt int)) *rawReceiver {
	t.Helper()
	rr := &rawReceiver{}
	stop := make(chan struct{})
	rr.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rr.mu.Lock()
		rr.hits = append(rr.hits, time.Now())
		n := len(rr.hits)
		rr.mu.Unlock()
		select {
		case <-stop:
			return
		default:
		}
		h(w, r, n)
	}))
	t.Cleanup(func() {
		close(stop)
		rr.srv.CloseClientConnections()
		rr.srv.Close()
	})
	return rr
}

func (rr *rawReceiver) times() []time.Time {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	return append([]time.Time(nil), rr.hits...)
}

// A receiver's Retry-After (seconds or a date, with 503 or 429) sets the wait before the next
// attempt, in either direction: sooner than a long schedule, later than a short one.
func TestWebhookRetryAfterHonoured(t *testing.T) {
	l := openTestLog(t, t.TempDir(), nil)
	date := func() string { return time.Now().Add(time.Second).UTC().Format(http.TimeFormat) }
	soon503 := newRawReceiver(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	soon429 := newRawReceiver(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		if n == 1 {
			w.Header().Set("Retry-After", date())
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	cfg := testConfig(EndpointConfig{ID: "a", URL: soon503.srv.URL}, EndpointConfig{ID: "b", URL: soon429.srv.URL})
	cfg.RetrySchedule = []time.Duration{time.Hour}
	startDeliverer(t, l, cfg, nil)
	l.Emit(roomEvent(sfu.EventRoomStarted, "r"))
	sfutest.WaitFor(t, "the retries Retry-After asked for", wait, func() bool { return len(soon503.times()) >= 2 && len(soon429.times()) >= 2 })

	late := newRawReceiver(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		if n == 1 {
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	l2 := openTestLog(t, t.TempDir(), nil)
	cfg = testConfig(EndpointConfig{ID: "c", URL: late.srv.URL})
	cfg.RetrySchedule = []time.Duration{50 * time.Millisecond}
	startDeliverer(t, l2, cfg, nil)
	l2.Emit(roomEvent(sfu.EventRoomStarted, "r"))
	sfutest.WaitFor(t, "the retry after Retry-After", wait, func() bool { return len(late.times()) >= 2 })
	if hits := late.times(); hits[1].Sub(hits[0]) < 3*time.Second {
		t.Fatalf("retried %v after a Retry-After of 3 s", hits[1].Sub(hits[0]))
	}
}

// Retries are spread: the waits of the schedule get jitter.
func TestWebhookRetryJitter(t *testing.T) {
	d := &Deliverer{cfg: Config{RetrySchedule: []time.Duration{time.Second, 10 * time.Second}}}
	seen := map[time.Duration]bool{}
	for range 200 {
		w := d.delay(2)
		if w < 8*time.Second || w > 12*time.Second {
			t.Fatalf("delay(2) = %v, want 10 s ± 20%%", w)
		}
		seen[w] = true
	}
	if len(seen) < 50 {
		t.Fatalf("only %d distinct waits in 200: no jitter", len(seen))
	}
}

// A receiver that hangs, one that answers a byte a second, and one that resets the connection
// cost an attempt at most the timeout each, and a healthy endpoint beside them gets every event.
func TestWebhookMisbehavingReceivers(t *testing.T) {
	l := openTestLog(t, t.TempDir(), nil)
	quit := make(chan struct{})
	hang := newRawReceiver(t, func(_ http.ResponseWriter, r *http.Request, _ int) {
		select {
		case <-r.Context().Done():
		case <-quit:
		}
	})
	trickle := newRawReceiver(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("Content-Length", "60")
		w.WriteHeader(http.StatusOK)
		for range 60 {
			if _, err := w.Write([]byte("x")); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-quit:
				return
			case <-time.After(time.Second):
			}
		}
	})
	reset := newRawReceiver(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		if n%2 == 1 {
			c, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				_ = c.(*net.TCPConn).SetLinger(0)
				_ = c.Close()
			}
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	t.Cleanup(func() { close(quit) }) // runs before the receivers close: their handlers return
	healthy := newReceiver(t, nil)
	cfg := testConfig(
		EndpointConfig{ID: "hang", URL: hang.srv.URL},
		EndpointConfig{ID: "trickle", URL: trickle.srv.URL},
		EndpointConfig{ID: "reset", URL: reset.srv.URL},
		EndpointConfig{ID: "ok", URL: healthy.srv.URL, Secret: healthy.secret},
	)
	cfg.Timeout = time.Second
	cfg.RetrySchedule = []time.Duration{100 * time.Millisecond}
	startDeliverer(t, l, cfg, nil)
	const events = 5
	for i := range events {
		l.Emit(roomEvent(sfu.EventRoomUpdated, "r"+strconv.Itoa(i%2)))
	}
	sfutest.WaitFor(t, "the healthy endpoint's deliveries", wait, func() bool { return len(healthy.delivered()) == events })
	// the trickling receiver's attempts end at the timeout, so its lanes move on (5 events
	// of 60 s each would take minutes)
	sfutest.WaitFor(t, "the trickling endpoint to get every event", wait, func() bool { return len(trickle.times()) >= events })
	// a reset is retried until it is answered; every event reaches the resetting endpoint
	sfutest.WaitFor(t, "the resetting endpoint's retries", wait, func() bool { return len(reset.times()) >= 2*events })
	// the hung endpoint is tried again after each timeout
	sfutest.WaitFor(t, "attempts at the hung endpoint", wait, func() bool { return len(hang.times()) >= 4 })
}
