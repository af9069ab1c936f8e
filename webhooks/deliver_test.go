package webhooks

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

const wait = 30 * time.Second // generous: the machine is shared

func TestDeliverySignedAndOrdered(t *testing.T) {
	l := openTestLog(t, t.TempDir(), nil)
	rx := newReceiver(t, nil)
	stats := newReceiver(t, nil)
	startDeliverer(t, l, testConfig(
		EndpointConfig{ID: "all", URL: rx.srv.URL, Secret: rx.secret},
		EndpointConfig{ID: "stats", URL: stats.srv.URL, Secret: stats.secret, Events: []string{"stream.stats"}},
	), nil)
	for i := range 60 {
		l.Emit(roomEvent(sfu.EventRoomUpdated, fmt.Sprintf("r%d", i%4)))
		if i%10 == 0 {
			l.Emit(&sfu.Event{Type: sfu.EventStreamStats, Room: &sfu.RoomInfo{Name: "r0"}, Stream: &sfu.StreamInfo{SID: "ST_1"}})
		}
	}
	sfutest.WaitFor(t, "60 deliveries", wait, func() bool { return len(rx.delivered()) >= 60 })
	sfutest.WaitFor(t, "6 stats deliveries", wait, func() bool { return len(stats.delivered()) >= 6 })
	got := rx.delivered()
	checkOrder(t, got)
	for _, ev := range got {
		if ev.Type == sfu.EventStreamStats {
			t.Fatal("stream.stats went to an endpoint that did not ask for it by name")
		}
	}
	for _, ev := range stats.delivered() {
		if ev.Type != sfu.EventStreamStats {
			t.Fatalf("stats endpoint got %s", ev.Type)
		}
	}
	if rx.badSignatures()+stats.badSignatures() != 0 {
		t.Fatal("a delivery's signature did not verify")
	}
}

// One room failing at endpoint A holds back that room only; A's other rooms and endpoint B
// flow while it retries, and a hanging endpoint C delays nobody.
func TestFailingRoomHoldsOnlyItself(t *testing.T) {
	l := openTestLog(t, t.TempDir(), nil)
	var healed atomic.Bool
	a := newReceiver(t, func(ev *sfu.Event, _ int) int {
		if ev.RoomName() == "bad" && !healed.Load() {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	b := newReceiver(t, nil)
	hang := make(chan struct{})
	c := newReceiver(t, func(*sfu.Event, int) int { <-hang; return http.StatusOK })
	t.Cleanup(func() { close(hang) })
	cfg := testConfig(
		EndpointConfig{ID: "a", URL: a.srv.URL, Secret: a.secret},
		EndpointConfig{ID: "b", URL: b.srv.URL, Secret: b.secret},
		EndpointConfig{ID: "c", URL: c.srv.URL, Secret: c.secret},
	)
	cfg.Timeout = time.Minute
	cfg.RetrySchedule = []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond}
	d := startDeliverer(t, l, cfg, nil)
	for i := range 40 {
		room := []string{"bad", "good1", "good2", "good3"}[i%4]
		l.Emit(roomEvent(sfu.EventRoomUpdated, room))
	}
	// B gets everything and A every good room while bad's first event keeps failing
	sfutest.WaitFor(t, "B's 40 deliveries", wait, func() bool { return len(b.delivered()) == 40 })
	sfutest.WaitFor(t, "A's 30 good deliveries", wait, func() bool { return len(a.delivered()) == 30 })
	sfutest.WaitFor(t, "4 attempts of bad's first event", wait, func() bool {
		return a.count(func(r received) bool { return r.ev.RoomName() == "bad" && r.attempt >= 4 }) > 0
	})
	var badSeqs []uint64
	a.mu.Lock()
	var times []time.Time
	for _, g := range a.got {
		if g.ev.RoomName() == "bad" {
			badSeqs = append(badSeqs, g.ev.Seq)
			times = append(times, g.at)
		}
	}
	a.mu.Unlock()
	for i, s := range badSeqs {
		if s != badSeqs[0] {
			t.Fatalf("bad's later event %d was sent while its first (%d) still failed", s, badSeqs[0])
		}
		// the schedule's waits carry ±20 % of jitter
		if i > 0 && i <= len(cfg.RetrySchedule) && times[i].Sub(times[i-1]) < cfg.RetrySchedule[i-1]*8/10 {
			t.Fatalf("attempt %d came %v after the previous one, schedule says %v ± 20 %%", i+1, times[i].Sub(times[i-1]), cfg.RetrySchedule[i-1])
		}
	}
	// the failure is listed as retrying
	recs, err := d.Deliveries(context.Background(), "a", DeliveryQuery{Status: StatusRetrying})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) == 0 || recs[0].Room != "bad" || recs[0].StatusCode != 500 {
		t.Fatalf("retrying deliveries: %+v", recs)
	}
	healed.Store(true)
	sfutest.WaitFor(t, "A's 40 deliveries", wait, func() bool { return len(a.delivered()) == 40 })
	checkOrder(t, a.delivered())
	checkOrder(t, b.delivered())
	if n := len(c.delivered()); n != 0 {
		t.Fatalf("hanging endpoint answered %d", n)
	}
}

func TestGoneDisablesAndReplayEnables(t *testing.T) {
	l := openTestLog(t, t.TempDir(), nil)
	var gone atomic.Bool
	gone.Store(true)
	rx := newReceiver(t, func(*sfu.Event, int) int {
		if gone.Load() {
			return http.StatusGone
		}
		return http.StatusOK
	})
	d := startDeliverer(t, l, testConfig(EndpointConfig{ID: "e", URL: rx.srv.URL, Secret: rx.secret}), nil)
	l.Emit(roomEvent(sfu.EventRoomStarted, "x"))
	sfutest.WaitFor(t, "the endpoint disabled", wait, func() bool { ep, _ := d.Endpoint("e"); return ep.Disabled })
	l.Emit(roomEvent(sfu.EventRoomFinished, "x"))
	gone.Store(false)
	// nothing is sent while disabled; replay enables it and the pending events flow from the
	// endpoint's position
	if _, err := d.Replay(context.Background(), "e", ReplayRequest{Since: "0"}); err != nil {
		t.Fatal(err)
	}
	sfutest.WaitFor(t, "both events delivered", wait, func() bool { return len(rx.delivered()) == 2 })
	checkOrder(t, rx.delivered())
	if ep, _ := d.Endpoint("e"); ep.Disabled {
		t.Fatal("still disabled after replay")
	}
}

func TestMaxAgeKeepsFailedAndReplays(t *testing.T) {
	l := openTestLog(t, t.TempDir(), nil)
	var up atomic.Bool
	rx := newReceiver(t, func(*sfu.Event, int) int {
		if up.Load() {
			return http.StatusOK
		}
		return http.StatusServiceUnavailable
	})
	cfg := testConfig(EndpointConfig{ID: "e", URL: rx.srv.URL, Secret: rx.secret})
	cfg.MaxAge = 300 * time.Millisecond
	d := startDeliverer(t, l, cfg, nil)
	for range 3 {
		l.Emit(roomEvent(sfu.EventRoomUpdated, "x"))
	}
	var failed []Delivery
	sfutest.WaitFor(t, "3 failed deliveries", wait, func() bool {
		var err error
		failed, err = d.Deliveries(context.Background(), "e", DeliveryQuery{Status: StatusFailed})
		return err == nil && len(failed) == 3
	})
	for _, f := range failed {
		if f.Attempts < 1 || f.StatusCode != 503 || f.EventID == "" || f.Room != "x" {
			t.Fatalf("failed record %+v", f)
		}
	}
	up.Store(true)
	l.Emit(roomEvent(sfu.EventRoomUpdated, "y")) // later events are not held back by failed ones
	sfutest.WaitFor(t, "y delivered", wait, func() bool { return len(rx.delivered()) == 1 })
	res, err := d.Replay(context.Background(), "e", ReplayRequest{Since: "1h"})
	if err != nil || res.Queued != 3 {
		t.Fatalf("replay: %+v %v", res, err)
	}
	sfutest.WaitFor(t, "3 replayed", wait, func() bool { return len(rx.delivered()) == 4 })
	sfutest.WaitFor(t, "no failed left", wait, func() bool {
		f, _ := d.Deliveries(context.Background(), "e", DeliveryQuery{Status: StatusFailed})
		return len(f) == 0
	})
}

func TestLaneSpillKeepsOrder(t *testing.T) {
	l := openTestLog(t, t.TempDir(), nil)
	var healed atomic.Bool
	rx := newReceiver(t, func(ev *sfu.Event, _ int) int {
		if ev.RoomName() == "flood" && !healed.Load() {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	startDeliverer(t, l, testConfig(EndpointConfig{ID: "e", URL: rx.srv.URL, Secret: rx.secret}), func(o *DeliveryOptions) { o.LaneLimit = 4 })
	for i := range 50 {
		l.Emit(roomEvent(sfu.EventRoomUpdated, "flood"))
		if i%5 == 0 {
			l.Emit(roomEvent(sfu.EventRoomUpdated, "calm"))
		}
	}
	sfutest.WaitFor(t, "calm's 10 events", wait, func() bool { return len(rx.delivered()) == 10 })
	healed.Store(true)
	sfutest.WaitFor(t, "all 60 events", wait, func() bool { return len(rx.delivered()) == 60 })
	checkOrder(t, rx.delivered())
}

func TestCursorSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	rx := newReceiver(t, nil)
	cfg := testConfig(EndpointConfig{ID: "e", URL: rx.srv.URL, Secret: rx.secret})
	runNo := 0
	run := func(n int) {
		runNo++
		run, t0, logged := runNo, time.Now(), false
		l, err := OpenLog(context.Background(), LogOptions{Config: DefaultEventsConfig(), DataDir: dir, Node: "n"})
		if err != nil {
			t.Fatal(err)
		}
		d, err := NewDeliverer(DeliveryOptions{Config: cfg, Log: l, CursorInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		before := len(rx.delivered())
		for range n {
			l.Emit(roomEvent(sfu.EventRoomUpdated, "r"))
		}
		sfutest.WaitFor(t, fmt.Sprintf("deliveries of run %d (before %d)", run, before), wait, func() bool {
			if time.Since(t0) > 5*time.Second && !logged {
				logged = true
				c, _, _ := d.store.cursor(context.Background(), "e")
				t.Logf("run %d: delivered %d, cursor %d, last seq %d, rx got %d bad %d", run, len(rx.delivered()), c, l.index.seq, len(rx.got), rx.badSignatures())
			}
			return len(rx.delivered()) == before+n
		})
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		_ = l.Close()
	}
	run(5)
	run(5) // a clean stop saved the position: nothing is sent twice
	got := rx.delivered()
	if len(got) != 10 {
		t.Fatalf("%d deliveries, want 10", len(got))
	}
	checkOrder(t, got)
}

func TestAddRemoveEndpoint(t *testing.T) {
	l := openTestLog(t, t.TempDir(), nil)
	rx := newReceiver(t, nil)
	d := startDeliverer(t, l, testConfig(), nil)
	ctx := context.Background()
	for _, bad := range []AddRequest{
		{URL: "ftp://x"}, {URL: "http://169.254.169.254/latest"}, {URL: "http://[fd00:ec2::254]/"},
		{URL: rx.srv.URL, Secret: "nope"}, {URL: rx.srv.URL, Events: []string{"["}},
	} {
		if _, err := d.Add(ctx, bad); !errors.Is(err, ErrInvalidEndpoint) {
			t.Errorf("add %+v: %v", bad, err)
		}
	}
	added, err := d.Add(ctx, AddRequest{URL: rx.srv.URL, Events: []string{"room.*"}})
	if err != nil || !strings.HasPrefix(added.Secret, SecretPrefix) {
		t.Fatal(added, err)
	}
	rx.setSecret(added.Secret)
	l.Emit(roomEvent(sfu.EventRoomStarted, "x"))
	l.Emit(&sfu.Event{Type: sfu.EventAuthFailed})
	sfutest.WaitFor(t, "delivery to the added endpoint", wait, func() bool { return len(rx.delivered()) == 1 })
	res, err := d.Test(ctx, added.ID)
	if err != nil || !res.OK {
		t.Fatalf("test: %+v %v", res, err)
	}
	if err := d.Remove(ctx, added.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Endpoint(added.ID); !errors.Is(err, ErrEndpointNotFound) {
		t.Fatal("endpoint still there")
	}
}

func TestBlockedTargetsRefusedAtDial(t *testing.T) {
	client := &http.Client{Transport: NewTransport(), Timeout: 5 * time.Second}
	for _, u := range []string{"http://169.254.169.254/latest/meta-data", "http://[fd00:ec2::254]/", "http://[fe80::1]/"} {
		_, err := client.Get(u)
		if !errors.Is(err, errBlockedAddr) {
			t.Errorf("%s: %v, want the blocked-address error", u, err)
		}
	}
}
