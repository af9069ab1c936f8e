package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
	"github.com/sluice-media/sluice/webhooks"
)

const e2eWait = 90 * time.Second // the machine is shared with other engineers' runs

// hookReceiver is a real webhook endpoint: it verifies every signature and records events.
type hookReceiver struct {
	signer *webhooks.Signer
	srv    *http.Server
	mu     sync.Mutex
	events []sfu.Event // every accepted delivery, duplicates included, in arrival order
	at     []time.Time // when each of events arrived
	ids    map[string]int
	bad    int
}

func newHookReceiver(secret string) *hookReceiver {
	s, _ := webhooks.NewSigner(secret)
	return &hookReceiver{signer: s, ids: map[string]int{}}
}

// listen serves on addr (127.0.0.1:PORT) until the end of the test.
func (h *hookReceiver) listen(t *testing.T, addr string) {
	t.Helper()
	var l net.Listener
	var err error
	sfutest.WaitFor(t, "the receiver's port", 10*time.Second, func() bool { l, err = net.Listen("tcp", addr); return err == nil })
	h.srv = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = h.srv.Serve(l) }()
	t.Cleanup(func() { _ = h.srv.Close() })
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var ev sfu.Event
	if err := h.signer.Verify(r.Header, body, time.Now(), webhooks.DefaultTolerance); err != nil || json.Unmarshal(body, &ev) != nil || ev.ID != r.Header.Get(webhooks.HeaderID) {
		h.mu.Lock()
		h.bad++
		h.mu.Unlock()
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	now := time.Now()
	h.mu.Lock()
	h.events = append(h.events, ev)
	h.at = append(h.at, now)
	h.ids[ev.ID]++
	h.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// lifecycles checks the objects the received events begin, update and end (deliveries of one
// event id counted once): nothing of an object arrives after its terminal event, and no object
// has two. It returns each object's state: 'b' begun and open, 'e' ended, 'u' only updated
// (begun before the receiver listened).
func (h *hookReceiver) lifecycles(t *testing.T) map[string]byte {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	state := map[string]byte{}
	seen := map[string]bool{}
	for _, ev := range h.events {
		if seen[ev.ID] {
			continue
		}
		seen[ev.ID] = true
		key, op, ok := webhooks.ObjectOf(&ev)
		if !ok {
			continue
		}
		if state[key] == webhooks.OpEnd {
			t.Errorf("webhook %s (seq %d) for %s after its terminal event", ev.Type, ev.Seq, key)
			continue
		}
		if op != webhooks.OpUpdate || state[key] == 0 {
			state[key] = op
		}
	}
	return state
}

func (h *hookReceiver) has(ids []string) (missing int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range ids {
		if h.ids[id] == 0 {
			missing++
		}
	}
	return missing
}

// With the endpoint up, the first webhook after a start (server.started) arrives within 1 s of
// its event.
func TestFirstWebhookAfterStart(t *testing.T) {
	secret := webhooks.NewSecret()
	rxAddr := fmt.Sprintf("127.0.0.1:%d", sfutest.FreeTCPPort(t))
	rx := newHookReceiver(secret)
	rx.listen(t, rxAddr)
	startDaemon(t, fmt.Sprintf(`webhooks:
  endpoints: [{id: rx, url: "http://%s/hook", secret: %q}]
`, rxAddr, secret))
	var ev sfu.Event
	var at time.Time
	sfutest.WaitFor(t, "server.started at the endpoint", 10*time.Second, func() bool {
		rx.mu.Lock()
		defer rx.mu.Unlock()
		for i, e := range rx.events {
			if e.Type == sfu.EventServerStarted {
				ev, at = e, rx.at[i]
				return true
			}
		}
		return false
	})
	if delay := at.Sub(ev.Time); delay > time.Second || delay < 0 {
		t.Errorf("server.started delivered %v after its event, want within 1 s", delay)
	} else {
		t.Logf("server.started delivered %v after its event", delay)
	}
}

// logEvents reads the whole event log through GET /v1/events.
func logEvents(t *testing.T, base string) []sfu.Event {
	t.Helper()
	var all []sfu.Event
	after := uint64(0)
	for {
		resp, err := http.Get(fmt.Sprintf("%s/v1/events?since=%d&limit=1000", base, after))
		if err != nil {
			t.Fatal(err)
		}
		var page struct {
			Events []sfu.Event `json:"events"`
			Next   uint64      `json:"next"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page.Events...)
		if len(page.Events) == 0 {
			return all
		}
		after = page.Next
	}
}

func apiDo(base, method, path, body string) (int, error) {
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// With the endpoint down, 1,000 events go through the daemon, which is killed with SIGKILL in
// the middle of the burst and restarted; then the endpoint comes up: every event id of the log
// arrives, each room's events in seq order, every signature verifies, and duplicates are
// counted.
func TestWebhooksNoLossAcrossKill(t *testing.T) {
	secret := webhooks.NewSecret()
	rxAddr := fmt.Sprintf("127.0.0.1:%d", sfutest.FreeTCPPort(t))
	d := startDaemon(t, fmt.Sprintf(`webhooks:
  endpoints: [{id: rx, url: "http://%s/hook", secret: %q}]
  timeout: 5s
  retry_schedule: [200ms, 500ms, 1s]
`, rxAddr, secret))

	const pairs = 500 // room.started + room.finished each: 1,000 events
	var next, doneCount atomic.Int64
	killed := make(chan struct{})
	var wg sync.WaitGroup
	deadline := time.Now().Add(3 * e2eWait)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > pairs {
					return
				}
				room := fmt.Sprintf("burst-%03d", i)
				for _, step := range []struct{ method, path, body string }{
					{"POST", "/v1/rooms", `{"name":"` + room + `"}`},
					{"DELETE", "/v1/rooms/" + room, ""},
				} {
					for time.Now().Before(deadline) {
						code, err := apiDo(d.URL, step.method, step.path, step.body)
						if err == nil && (code/100 == 2 || (step.method == "DELETE" && code == 404)) {
							break // 404: the room was open at the kill and was reconciled
						}
						time.Sleep(20 * time.Millisecond) // the daemon is down: try again
					}
				}
				doneCount.Add(1)
			}
		}()
	}
	sfutest.WaitFor(t, "half the burst", e2eWait, func() bool { return doneCount.Load() >= pairs/2 })
	d.kill()
	close(killed)
	d.start()
	wg.Wait()
	if doneCount.Load() != pairs {
		t.Fatalf("only %d of %d room pairs went through", doneCount.Load(), pairs)
	}

	rx := newHookReceiver(secret)
	rx.listen(t, rxAddr)
	var logged []sfu.Event
	sfutest.WaitFor(t, "every logged event delivered", 2*e2eWait, func() bool {
		logged = logEvents(t, d.URL)
		ids := make([]string, len(logged))
		for i, ev := range logged {
			ids[i] = ev.ID
		}
		return rx.has(ids) == 0
	})

	// the log itself: at least 1,000 burst events, one terminal event per room
	started, finished := map[string]int{}, map[string]int{}
	for _, ev := range logged {
		if ev.Room != nil && strings.HasPrefix(ev.Room.Name, "burst-") {
			switch ev.Type {
			case sfu.EventRoomStarted:
				started[ev.Room.SID]++
			case sfu.EventRoomFinished:
				finished[ev.Room.SID]++
			}
		}
	}
	reconciled := 0
	for sid, n := range started {
		if n != 1 || finished[sid] != 1 {
			t.Fatalf("room %s: %d started, %d finished", sid, n, finished[sid])
		}
	}
	for _, ev := range logged {
		if ev.Type == sfu.EventRoomFinished && ev.Reason == sfu.ReasonError {
			reconciled++
		}
	}
	if len(started) < pairs {
		t.Fatalf("%d burst rooms in the log, want at least %d", len(started), pairs)
	}

	rx.mu.Lock()
	defer rx.mu.Unlock()
	if rx.bad != 0 {
		t.Fatalf("%d deliveries failed signature verification", rx.bad)
	}
	lastSeq := map[string]uint64{}
	seen := map[string]bool{}
	dups := 0
	for _, ev := range rx.events {
		if seen[ev.ID] {
			dups++
			continue
		}
		seen[ev.ID] = true
		room := ev.RoomName()
		if ev.Seq <= lastSeq[room] {
			t.Fatalf("room %q: seq %d arrived after %d", room, ev.Seq, lastSeq[room])
		}
		lastSeq[room] = ev.Seq
	}
	t.Logf("log: %d events (%d burst rooms, %d rooms reconciled after the kill); receiver: %d deliveries, %d distinct, %d duplicates",
		len(logged), len(started), reconciled, len(rx.events), len(seen), dups)
}

// A publisher's stream open at the kill gets its terminal events after the restart, once.
func TestStreamOpenAtKillIsReconciled(t *testing.T) {
	d := startDaemon(t, "")
	pub := newWHIPPublisher(t, d.URL+"/whip/cam")
	var streamSID string
	sfutest.WaitFor(t, "stream.publishing in the log", e2eWait, func() bool {
		for _, ev := range logEvents(t, d.URL) {
			if ev.Type == sfu.EventStreamPublishing {
				streamSID = ev.Stream.SID
				return true
			}
		}
		return false
	})
	d.kill()
	pub.close()
	d.start()
	var terminal []sfu.Event
	sfutest.WaitFor(t, "the terminal events", e2eWait, func() bool {
		terminal = terminal[:0]
		for _, ev := range logEvents(t, d.URL) {
			switch ev.Type {
			case sfu.EventStreamUnpublished, sfu.EventStreamFailed, sfu.EventParticipantLeft, sfu.EventTrackUnpublished, sfu.EventRoomFinished:
				terminal = append(terminal, ev)
			}
		}
		return len(terminal) >= 5 // stream, participant, 2 tracks, room
	})
	byType := map[string]int{}
	for _, ev := range terminal {
		byType[ev.Type]++
		if ev.Reason != sfu.ReasonError {
			t.Fatalf("%s reason %q, want error (a crash)", ev.Type, ev.Reason)
		}
		if ev.Type == sfu.EventStreamUnpublished && ev.Stream.SID != streamSID {
			t.Fatalf("terminal event for stream %s, want %s", ev.Stream.SID, streamSID)
		}
	}
	want := map[string]int{sfu.EventStreamUnpublished: 1, sfu.EventParticipantLeft: 1, sfu.EventTrackUnpublished: 2, sfu.EventRoomFinished: 1}
	for typ, n := range want {
		if byType[typ] != n {
			t.Fatalf("terminal events after the kill: %v, want %v", byType, want)
		}
	}
	// a clean restart ends nothing more
	d.stop()
	d.start()
	n := 0
	for _, ev := range logEvents(t, d.URL) {
		if ev.Reason == sfu.ReasonError || ev.Reason == sfu.ReasonServerShutdown {
			n++
		}
	}
	if n != 5 {
		t.Fatalf("%d terminal events after a second start, want the same 5", n)
	}
}

// `sluice status -f -o json` sees every event in order, and loses and repeats nothing while
// the daemon is killed and restarted under it.
func TestStatusFollowAcrossRestart(t *testing.T) {
	d := startDaemon(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &sfutest.Buffer{}
	errs := &sfutest.Buffer{}
	follower := startCLI(ctx, out, errs, "--server", d.URL, "status", "-f", "--since", "0", "-o", "json")
	defer follower.wait()
	defer cancel()
	create := func(from, to int) {
		for i := from; i < to; i++ {
			room := fmt.Sprintf("f-%02d", i)
			if code, err := apiDo(d.URL, "POST", "/v1/rooms", `{"name":"`+room+`"}`); err != nil || code/100 != 2 {
				t.Fatalf("create %s: %d %v", room, code, err)
			}
			if i%2 == 0 {
				if code, err := apiDo(d.URL, "DELETE", "/v1/rooms/"+room, ""); err != nil || code != 204 {
					t.Fatalf("delete %s: %d %v", room, code, err)
				}
			}
		}
	}
	create(0, 10)
	// a live publisher: its participant, tracks and stream are open at the kill
	pub := newWHIPPublisher(t, d.URL+"/whip/live")
	sfutest.WaitFor(t, "the publisher's stream", e2eWait, func() bool {
		for _, ev := range logEvents(t, d.URL) {
			if ev.Type == sfu.EventStreamPublishing {
				return true
			}
		}
		return false
	})
	d.kill()
	pub.close()
	d.start()
	create(10, 20)
	d.stop()
	d.start()
	create(20, 30)
	var logged []sfu.Event
	sfutest.WaitFor(t, "the follower printed the whole log", e2eWait, func() bool {
		logged = logEvents(t, d.URL)
		return strings.Count(out.String(), "\n") >= len(logged)
	})
	cancel()
	var printed []sfu.Event
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var ev sfu.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("not NDJSON: %q", line)
		}
		printed = append(printed, ev)
	}
	want := logged
	if len(printed) != len(want) {
		t.Fatalf("printed %d events, the log has %d", len(printed), len(want))
	}
	for i := range want {
		if printed[i].ID != want[i].ID || printed[i].Seq != want[i].Seq {
			t.Fatalf("event %d: printed seq %d %s, log seq %d %s", i, printed[i].Seq, printed[i].Type, want[i].Seq, want[i].Type)
		}
	}
	types := map[string]int{}
	for _, ev := range printed {
		types[ev.Type]++
	}
	for _, typ := range []string{sfu.EventServerStarted, sfu.EventServerStopping, sfu.EventParticipantJoined, sfu.EventTrackPublished,
		sfu.EventStreamPublishing, sfu.EventStreamUnpublished, sfu.EventRoomFinished} {
		if types[typ] == 0 {
			t.Fatalf("the follower saw no %s: %v", typ, types)
		}
	}
	if !strings.Contains(errs.String(), "reconnected") {
		t.Fatalf("the follower did not report its reconnection: %s", errs.String())
	}
}

// A receiver from `sluice webhooks listen` prints verified events and rejects a tampered body
// and a timestamp older than five minutes.
func TestWebhooksListenVerifies(t *testing.T) {
	secret := webhooks.NewSecret()
	port := sfutest.FreeTCPPort(t)
	ctx, cancel := context.WithCancel(context.Background())
	out := &sfutest.Buffer{}
	proc := startCLI(ctx, out, out, "webhooks", "listen", "--port", fmt.Sprint(port), "--secret", secret)
	defer func() { cancel(); proc.wait() }()
	url := fmt.Sprintf("http://127.0.0.1:%d/hook", port)
	signer, _ := webhooks.NewSigner(secret)
	send := func(id string, ts time.Time, body []byte, tamper bool) int {
		req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
		signer.SetHeaders(req.Header, id, ts, body)
		if tamper {
			req.Body = io.NopCloser(bytes.NewReader(append([]byte(nil), bytes.Replace(body, []byte("lobby"), []byte("lobbx"), 1)...)))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	body := []byte(`{"id":"evt_1","type":"room.started","seq":7,"time":"2026-11-22T08:00:00Z","room":{"name":"lobby","sid":"RM_1","created_at":"2026-11-22T08:00:00Z","participants":0}}`)
	sfutest.WaitFor(t, "the receiver", e2eWait, func() bool { return send("evt_1", time.Now(), body, false) == http.StatusNoContent })
	if code := send("evt_1", time.Now(), body, true); code != http.StatusUnauthorized {
		t.Fatalf("tampered body answered %d", code)
	}
	if code := send("evt_1", time.Now().Add(-6*time.Minute), body, false); code != http.StatusUnauthorized {
		t.Fatalf("old timestamp answered %d", code)
	}
	sfutest.WaitFor(t, "the banner and three printed lines", e2eWait, func() bool { return strings.Count(out.String(), "\n") >= 4 })
	text := out.String()
	if !strings.Contains(text, "room.started") || !strings.Contains(text, "lobby") ||
		!strings.Contains(text, "REJECTED webhook-id=evt_1") || !strings.Contains(text, "no signature matches") || !strings.Contains(text, "older than the tolerance") {
		t.Fatalf("listen printed:\n%s", text)
	}
}
