package webhooks

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// Three embedded servers routed to each other form one JetStream cluster: the log is replicated
// on the three, an event stored through one is read through the others, and EndNode ends a
// node's open objects as that node's events.
func TestEmbeddedRoutesReplicate(t *testing.T) {
	logs := openRoutedLogs(t, 3)
	ctx := context.Background()
	info, err := logs[0].stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 {
		t.Fatalf("replicas %d, want 3", info.Config.Replicas)
	}
	room := &sfu.RoomInfo{Name: "r", SID: "RM_1"}
	logs[2].Emit(&sfu.Event{Type: sfu.EventRoomStarted, Room: room})
	logs[2].Emit(&sfu.Event{Type: sfu.EventParticipantJoined, Room: room, Participant: &sfu.ParticipantInfo{SID: "PA_1", Identity: "cam"}})
	n, err := logs[0].EndNode(ctx, "n2", "n0")
	if err != nil || n != 2 {
		t.Fatalf("EndNode: %d events, %v; want 2", n, err)
	}
	var types []string
	if err := logs[1].Read(ctx, Query{}, func(r Record) error {
		if r.Node != "n2" {
			t.Errorf("%s stored as node %q, want n2", r.Type, r.Node)
		}
		types = append(types, r.Type)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprint([]string{sfu.EventRoomStarted, sfu.EventParticipantJoined, sfu.EventParticipantLeft, sfu.EventRoomFinished})
	if fmt.Sprint(types) != want {
		t.Fatalf("log %v, want %v", types, want)
	}
	// a second EndNode finds nothing open
	if n, err := logs[1].EndNode(ctx, "n2", "n1"); err != nil || n != 0 {
		t.Fatalf("second EndNode: %d, %v", n, err)
	}
}

// openRoutedLogs opens n logs whose embedded servers route to each other (nodes n0, n1, …),
// replicated on min(3, n), and closes them at cleanup.
func openRoutedLogs(tb testing.TB, n int) []*Log {
	tb.Helper()
	ports := make([]int, n)
	for i := range ports {
		ports[i] = sfutest.FreeTCPPort(tb)
	}
	logs := make([]*Log, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range logs {
		var peers []*url.URL
		for j, p := range ports {
			if j != i {
				peers = append(peers, &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", p), User: url.UserPassword("u", "p")})
			}
		}
		opts := LogOptions{Config: DefaultEventsConfig(), DataDir: tb.TempDir(), Node: fmt.Sprintf("n%d", i), SnapshotInterval: time.Hour,
			Routes: &Routes{Name: "t", Host: "127.0.0.1", Port: ports[i], Peers: peers, User: "u", Password: "p"}, Replicas: min(3, n)}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			logs[i], errs[i] = OpenLog(ctx, opts)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if logs[i] != nil {
			tb.Cleanup(func() { _ = logs[i].Close() })
		}
		if err != nil {
			tb.Fatalf("node %d: %v", i, err)
		}
	}
	return logs
}

// BenchmarkEmitReplicated is BenchmarkEmit on a log replicated on three routed servers: the
// ack waits for a quorum (two of three) to store the event.
func BenchmarkEmitReplicated(b *testing.B) {
	benchEmit(b, openRoutedLogs(b, 3)[1]) // not necessarily the stream leader: the common case
}
