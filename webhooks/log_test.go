package webhooks

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/sluice-media/sluice/sfu"
)

// openTestLog opens an embedded log in dir; it is closed at the end of the test.
func openTestLog(t testing.TB, dir string, mod func(*LogOptions)) *Log {
	t.Helper()
	opts := LogOptions{Config: DefaultEventsConfig(), DataDir: dir, Node: "test", SnapshotInterval: time.Hour, EgressGrace: 50 * time.Millisecond}
	if mod != nil {
		mod(&opts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := OpenLog(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func readAll(t testing.TB, l *Log, q Query) []Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []Record
	if err := l.Read(ctx, q, func(r Record) error { out = append(out, r); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLogEmitReadSeq(t *testing.T) {
	l := openTestLog(t, t.TempDir(), nil)
	if got := readAll(t, l, Query{}); len(got) != 0 {
		t.Fatalf("empty log read %d records", len(got))
	}
	var evs []*sfu.Event
	for i := range 20 {
		room := fmt.Sprintf("room.%d", i%3)
		ev := &sfu.Event{Type: sfu.EventRoomStarted, Room: &sfu.RoomInfo{Name: room, SID: sfu.NewID("RM_")}}
		if i%5 == 0 {
			ev = &sfu.Event{Type: sfu.EventAuthFailed, Reason: sfu.AuthInvalidToken, Protocol: "http"}
		}
		l.Emit(ev)
		if ev.Seq != uint64(i+1) || ev.ID == "" || ev.Time.IsZero() {
			t.Fatalf("event %d: seq %d id %q time %v", i, ev.Seq, ev.ID, ev.Time)
		}
		evs = append(evs, ev)
	}
	all := readAll(t, l, Query{})
	if len(all) != 20 {
		t.Fatalf("read %d records, want 20", len(all))
	}
	for i, r := range all {
		ev, err := r.Event()
		if err != nil {
			t.Fatal(err)
		}
		if r.Seq != evs[i].Seq || ev.Seq != r.Seq || ev.ID != evs[i].ID || r.ID != ev.ID || r.Room != evs[i].RoomName() || r.Type != evs[i].Type {
			t.Fatalf("record %d: %+v, event %+v", i, r, ev)
		}
	}
	if got := readAll(t, l, Query{Room: "room.1"}); len(got) != 6 {
		t.Fatalf("room filter: %d records, want 6", len(got))
	}
	if got := readAll(t, l, Query{Types: []string{"auth.*"}}); len(got) != 4 {
		t.Fatalf("type filter: %d records, want 4", len(got))
	}
	if got := readAll(t, l, Query{After: 15}); len(got) != 5 || got[0].Seq != 16 {
		t.Fatalf("after 15: %d records", len(got))
	}
	if got := readAll(t, l, Query{After: 20}); len(got) != 0 {
		t.Fatalf("after the end: %d records", len(got))
	}
	if got := readAll(t, l, Query{Room: "nowhere"}); len(got) != 0 {
		t.Fatalf("unknown room: %d records", len(got))
	}
}

func TestLogFollow(t *testing.T) {
	l := openTestLog(t, t.TempDir(), nil)
	l.Emit(&sfu.Event{Type: sfu.EventServerStarted})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := make(chan Record, 100)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = l.Follow(ctx, Query{After: 1}, func(r Record) error {
			got <- r
			if r.Seq == 11 {
				return ErrStop
			}
			return nil
		})
	}()
	for range 10 {
		l.Emit(&sfu.Event{Type: sfu.EventRoomUpdated, Room: &sfu.RoomInfo{Name: "a"}})
	}
	wg.Wait()
	close(got)
	want := uint64(2)
	for r := range got {
		if r.Seq != want {
			t.Fatalf("followed seq %d, want %d", r.Seq, want)
		}
		var ev map[string]any
		if err := json.Unmarshal(r.Body, &ev); err != nil || ev["seq"].(float64) != float64(want) {
			t.Fatalf("body %s", r.Body)
		}
		want++
	}
	if want != 12 {
		t.Fatalf("followed up to %d", want-1)
	}
}

func TestWithSeq(t *testing.T) {
	body, _ := json.Marshal(&sfu.Event{ID: `evt_"seq":0`, Type: "x"})
	out := withSeq(body, 1234)
	var ev sfu.Event
	if err := json.Unmarshal(out, &ev); err != nil || ev.Seq != 1234 || ev.ID != `evt_"seq":0` {
		t.Fatalf("%s -> %s (%+v, %v)", body, out, ev, err)
	}
}

func TestSubjectRoundTrip(t *testing.T) {
	for _, room := range []string{"", "a", "lobby.east", "x@y.z", "a~b", "~", "-_@"} {
		room2, typ, ok := parseSubject(eventSubject(room, "recording.ended"))
		if !ok || room2 != room || typ != "recording.ended" {
			t.Errorf("room %q: got %q %q %v (subject %s)", room, room2, typ, ok, eventSubject(room, "recording.ended"))
		}
	}
}

// An unreachable log costs an emitter at most EmitTimeout, is counted, and never panics.
func TestEmitUnreachableLogGivesUp(t *testing.T) {
	l := openTestLog(t, t.TempDir(), func(o *LogOptions) { o.EmitTimeout = 300 * time.Millisecond })
	l.srv.Shutdown()
	l.srv.WaitForShutdown()
	start := time.Now()
	ev := &sfu.Event{Type: sfu.EventRoomStarted, Room: &sfu.RoomInfo{Name: "x"}}
	l.Emit(ev)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Emit blocked %v", took)
	}
	var m dto.Metric
	if err := l.failures.Write(&m); err != nil {
		t.Fatal(err)
	}
	if ev.Seq != 0 || m.GetCounter().GetValue() != 1 {
		t.Fatalf("seq %d, failures %v", ev.Seq, m.GetCounter().GetValue())
	}
}

func FuzzSubjectRoundTrip(f *testing.F) {
	for _, s := range []string{"", "lobby", "a.b", "~", "x@y", "é", "*", ">"} {
		f.Add(s, "room.started")
	}
	f.Fuzz(func(t *testing.T, room, typ string) {
		if strings.ContainsAny(typ, " \t\r\n*>") || typ == "" || strings.HasPrefix(typ, ".") || strings.HasSuffix(typ, ".") || strings.Contains(typ, "..") {
			return // types are the catalogue's constants
		}
		subj := eventSubject(room, typ)
		if strings.ContainsAny(subj, " \t\r\n*>") {
			t.Fatalf("subject %q is not a literal subject", subj)
		}
		r2, t2, ok := parseSubject(subj)
		if !ok || r2 != room || t2 != typ {
			t.Fatalf("%q %q -> %q -> %q %q %v", room, typ, subj, r2, t2, ok)
		}
	})
}

func FuzzParseSince(f *testing.F) {
	for _, s := range []string{"", "0", "1042", "10m", "-5s", "1h30m", "18446744073709551616", "007"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, _, _ = ParseSince(s, time.Unix(1e9, 0)) // must not panic
	})
}
