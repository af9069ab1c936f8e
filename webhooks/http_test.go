package webhooks

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
)

func newTestAPI(t *testing.T) (*Log, *httptest.Server) {
	t.Helper()
	l := openTestLog(t, t.TempDir(), nil)
	d := startDeliverer(t, l, testConfig(), nil)
	h := &HTTP{Log: l, Deliverer: d, Heartbeat: 50 * time.Millisecond}
	mux := http.NewServeMux()
	for pattern, fn := range h.Routes() {
		mux.Handle(pattern, fn)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { h.CloseFollowers(); srv.Close() })
	return l, srv
}

func getPage(t *testing.T, url string) (EventsPage, int) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p EventsPage
	_ = json.NewDecoder(resp.Body).Decode(&p)
	return p, resp.StatusCode
}

func seqs(t *testing.T, p EventsPage) []uint64 {
	var out []uint64
	for _, raw := range p.Events {
		var ev sfu.Event
		if err := json.Unmarshal(raw, &ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, ev.Seq)
	}
	return out
}

func TestEventsPage(t *testing.T) {
	l, srv := newTestAPI(t)
	for i := range 30 {
		typ := sfu.EventRoomUpdated
		if i%3 == 0 {
			typ = sfu.EventRecordingUpdated
		}
		l.Emit(roomEvent(typ, fmt.Sprintf("r%d", i%2)))
	}
	p, code := getPage(t, srv.URL+"/v1/events?limit=5")
	if code != 200 || fmt.Sprint(seqs(t, p)) != "[26 27 28 29 30]" || p.Next != 30 || p.LastSeq != 30 {
		t.Fatalf("newest page: %d %v next %d", code, seqs(t, p), p.Next)
	}
	p, _ = getPage(t, srv.URL+"/v1/events?since=10&limit=3")
	if fmt.Sprint(seqs(t, p)) != "[11 12 13]" || p.Next != 13 {
		t.Fatalf("since page: %v next %d", seqs(t, p), p.Next)
	}
	p, _ = getPage(t, srv.URL+"/v1/events?since=0&type=recording.*&room=r0&limit=100")
	if fmt.Sprint(seqs(t, p)) != "[1 7 13 19 25]" {
		t.Fatalf("filtered: %v", seqs(t, p))
	}
	p, _ = getPage(t, srv.URL+"/v1/events?since=1h&limit=2")
	if fmt.Sprint(seqs(t, p)) != "[1 2]" {
		t.Fatalf("since a duration: %v", seqs(t, p))
	}
	for _, bad := range []string{"since=soon", "limit=0", "limit=100000", "type=["} {
		if _, code := getPage(t, srv.URL+"/v1/events?"+bad); code != http.StatusBadRequest {
			t.Errorf("%s: %d", bad, code)
		}
	}
}

// sseRead reads n events (id, data) from an SSE response.
func sseRead(t *testing.T, sc *bufio.Scanner, n int) (ids []string, beats int) {
	t.Helper()
	for len(ids) < n && sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "data: "):
			var ev sfu.Event
			if err := json.Unmarshal([]byte(line[6:]), &ev); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, fmt.Sprint(ev.Seq))
		case line == ": heartbeat":
			beats++
		}
	}
	return ids, beats
}

func TestEventsFollowResumes(t *testing.T) {
	l, srv := newTestAPI(t)
	for range 5 {
		l.Emit(roomEvent(sfu.EventRoomUpdated, "a"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	follow := func(header string, query string) *bufio.Scanner {
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/events?follow=1"+query, nil)
		if header != "" {
			req.Header.Set("Last-Event-ID", header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
			t.Fatalf("content type %q", ct)
		}
		return bufio.NewScanner(resp.Body)
	}
	ids, _ := sseRead(t, follow("", "&since=2"), 3)
	if strings.Join(ids, ",") != "3,4,5" {
		t.Fatalf("since=2: %v", ids)
	}
	sc := follow("4", "&since=1") // Last-Event-ID wins over since
	go func() {
		for range 3 {
			l.Emit(roomEvent(sfu.EventRoomUpdated, "a"))
		}
	}()
	ids, _ = sseRead(t, sc, 4)
	if strings.Join(ids, ",") != "5,6,7,8" {
		t.Fatalf("Last-Event-ID 4: %v", ids)
	}
	_, beats := sseRead(t, sc, 0)
	for beats == 0 && sc.Scan() {
		if sc.Text() == ": heartbeat" {
			beats++
		}
	}
	if beats == 0 {
		t.Fatal("no heartbeat")
	}
}
