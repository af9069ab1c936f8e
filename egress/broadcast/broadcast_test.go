package broadcast

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/egress"
	"github.com/sluice-media/sluice/egress/egresstest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// TestBroadcastFollowsParticipant runs a broadcast in process (under -race in make test): it
// follows --participant across a reconnect of the publisher, keeps one connection to the
// platform, whose file's timestamps never go back, and ends with broadcast.ended (stopped).
func TestBroadcastFollowsParticipant(t *testing.T) {
	platform := egresstest.StartPlatform(t, egresstest.PlatformOptions{})
	hub, events := runHub(t)
	m, err := New(Options{Config: egress.BroadcastConfig{Grace: 10 * time.Second, MaxRetryDuration: time.Minute}, Hub: hub})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	other := egresstest.StartPublisher(t, hub, "studio", "guest") // in the room first: not the source
	defer other.Close()
	pub := egresstest.StartPublisher(t, hub, "studio", "host")
	info, err := m.Start(StartRequest{Room: "studio", URLs: []string{platform.URL("k-follow-1234")}, Participant: "host"})
	if err != nil {
		t.Fatal(err)
	}
	status := func() *sfu.BroadcastInfo { i, _ := m.Get(info.ID); return i }
	sfutest.WaitFor(t, "active", 20*time.Second, func() bool { return status().Status == StatusActive })
	if s := status(); s.Participant != "host" {
		t.Fatalf("source %q, want host", s.Participant)
	}
	time.Sleep(2 * time.Second)
	pub.Close() // the host reconnects
	sent := status().BytesSent
	pub = egresstest.StartPublisher(t, hub, "studio", "host")
	defer pub.Close()
	sfutest.WaitFor(t, "media from the returning host", 20*time.Second, func() bool { return status().BytesSent > sent+50_000 })
	time.Sleep(2 * time.Second)
	final, err := m.Stop(info.ID)
	if err != nil {
		t.Fatal(err)
	}
	if final.Status != StatusComplete || final.Participant != "host" || final.Reconnects != 0 {
		t.Errorf("final %+v", final)
	}
	var types []string
	for _, ev := range events.Events(0) {
		if ev.Broadcast != nil {
			types = append(types, ev.Type)
		}
	}
	if len(types) != 2 || types[0] != sfu.EventBroadcastStarted || types[1] != sfu.EventBroadcastEnded {
		t.Errorf("broadcast events %v, want started, ended", types)
	}
	platform.Stop()
	files := platform.Recordings()
	if len(files) != 1 {
		t.Fatalf("files %v, want one connection through the reconnect", files)
	}
	checkMonotonic(t, files[0])
}

// checkMonotonic reads an FLV file's tags: per stream, timestamps never decrease, and the
// file spans the broadcast.
func checkMonotonic(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 13 || string(b[:3]) != "FLV" {
		t.Fatalf("not an FLV file")
	}
	last := map[byte]uint32{}
	count := map[byte]int{}
	for off := 13; off+11 <= len(b); {
		typ := b[off]
		size := int(b[off+1])<<16 | int(b[off+2])<<8 | int(b[off+3])
		ts := uint32(b[off+4])<<16 | uint32(b[off+5])<<8 | uint32(b[off+6]) | uint32(b[off+7])<<24
		if off+11+size+4 > len(b) {
			break
		}
		if typ == 8 || typ == 9 {
			if ts < last[typ] {
				t.Fatalf("tag type %d goes back from %d to %d ms", typ, last[typ], ts)
			}
			last[typ] = ts
			count[typ]++
		}
		off += 11 + size + 4
	}
	t.Logf("%d video and %d audio tags, last at %d / %d ms", count[9], count[8], last[9], last[8])
	if count[9] < 100 || count[8] < 100 || last[9] < 3000 {
		t.Errorf("file too short: %v tags, last %v", count, last)
	}
}

// runHub runs a hub with a local emitter until the end of the test.
func runHub(t *testing.T) (*sfu.Hub, *sfu.LocalEmitter) {
	t.Helper()
	events := sfu.NewLocalEmitter(0, nil)
	hub, err := sfu.NewHub(sfu.Options{Config: sfu.DefaultConfig(), Emitter: events})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = hub.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return hub, events
}

// A broadcast to two platforms, one of which dies for good: its destination's changes
// (reconnecting, then failed once retries are exhausted) are broadcast.updated events with the
// destination's redacted URL and error, while the broadcast goes on; its own events are one
// started and one ended.
func TestBroadcastDestinationChangesAreEvents(t *testing.T) {
	good := egresstest.StartPlatform(t, egresstest.PlatformOptions{})
	dying := egresstest.StartPlatform(t, egresstest.PlatformOptions{})
	hub, events := runHub(t)
	m, err := New(Options{Config: egress.BroadcastConfig{Grace: 10 * time.Second, MaxRetryDuration: 2 * time.Second}, Hub: hub,
		Backoff: egress.Backoff{Min: 100 * time.Millisecond, Max: 300 * time.Millisecond, Stable: 10 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	pub := egresstest.StartPublisher(t, hub, "two", "host")
	defer pub.Close()
	info, err := m.Start(StartRequest{Room: "two", URLs: []string{good.URL("k-good-1234"), dying.URL("k-dying-5678")}})
	if err != nil {
		t.Fatal(err)
	}
	status := func() *sfu.BroadcastInfo { i, _ := m.Get(info.ID); return i }
	bothActive := func() bool {
		s := status()
		return len(s.Destinations) == 2 && s.Destinations[0].Status == destActive && s.Destinations[1].Status == destActive
	}
	sfutest.WaitFor(t, "both destinations active", 30*time.Second, bothActive)
	dying.Kill()
	sfutest.WaitFor(t, "the dead destination failed", 30*time.Second, func() bool { return status().Destinations[1].Status == destFailed })
	sent := status().Destinations[0].BytesSent
	sfutest.WaitFor(t, "the other goes on", 20*time.Second, func() bool { return status().Destinations[0].BytesSent > sent+20_000 })
	if _, err := m.Stop(info.ID); err != nil {
		t.Fatal(err)
	}
	var got []string
	var evs []sfu.Event
	for _, ev := range events.Events(0) {
		if ev.Broadcast != nil {
			evs = append(evs, ev)
			d := "-"
			for _, dst := range ev.Broadcast.Destinations {
				if strings.Contains(dst.URL, fmt.Sprint(dying.Port)) {
					d = dst.Status
				}
			}
			got = append(got, ev.Type+" "+d)
		}
	}
	// the first destination to come up starts the broadcast, the second updates it; the dying
	// one reconnects (one or more tries) and fails while the broadcast goes on
	if len(got) < 5 || got[0] != "broadcast.started connecting" && got[0] != "broadcast.started active" ||
		got[1] != "broadcast.updated active" || got[2] != "broadcast.updated reconnecting" ||
		got[len(got)-2] != "broadcast.updated failed" || got[len(got)-1] != "broadcast.ended failed" {
		t.Fatalf("broadcast events %v", got)
	}
	for _, s := range got[2 : len(got)-2] {
		if s != "broadcast.updated reconnecting" {
			t.Fatalf("broadcast events %v", got)
		}
	}
	failed := evs[len(evs)-2]
	if failed.Error == nil || failed.Broadcast.URL != failed.Broadcast.Destinations[1].URL ||
		strings.Contains(failed.Broadcast.URL, "k-dying") || !strings.HasSuffix(failed.Broadcast.URL, "/***") ||
		failed.Broadcast.Destinations[1].Error == nil || failed.Broadcast.Destinations[1].Reconnects == 0 {
		t.Fatalf("the failed destination's event: %+v error %+v", failed.Broadcast, failed.Error)
	}
}
