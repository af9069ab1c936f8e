package webhooks

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// fill writes into path until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling: %v", err)
			}
			return
		}
	}
}

// A full disk makes the store fail its writes (a filestore keeps its first write error for
// ever); once space is free again the log recovers without a restart and says so.
func TestLogRecoversFromFullDisk(t *testing.T) {
	dir := sfutest.MountTmpfs(t, "16m")
	logs := &sfutest.Buffer{}
	l := openTestLog(t, dir, func(o *LogOptions) {
		o.EmitTimeout = 500 * time.Millisecond
		o.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	emit := func() *sfu.Event {
		ev := &sfu.Event{Type: sfu.EventRoomStarted, Room: &sfu.RoomInfo{Name: "disk", SID: sfu.NewID("RM_")}}
		l.Emit(ev)
		return ev
	}
	rx := newReceiver(t, nil)
	startDeliverer(t, l, testConfig(EndpointConfig{ID: "rx", URL: rx.srv.URL, Secret: rx.secret}), nil)
	if ev := emit(); ev.Seq == 0 {
		t.Fatal("emit before the fault was not stored")
	}
	filler := filepath.Join(dir, "filler")
	fill(t, filler)
	// events with a body large enough to need new space
	lostBefore := counterValue(t, l.failures)
	for range 200 {
		ev := &sfu.Event{Type: sfu.EventRoomStarted, Room: &sfu.RoomInfo{Name: "disk", SID: sfu.NewID("RM_"), Metadata: strings.Repeat("x", 60<<10)}}
		l.Emit(ev)
		if ev.Seq == 0 {
			break
		}
	}
	if counterValue(t, l.failures) == lostBefore {
		t.Fatal("no emit failed on a full disk: the fault was not created")
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if ev := emit(); ev.Seq != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log did not recover after space was freed; log:\n%s", tail(logs.String(), 20))
		}
		time.Sleep(200 * time.Millisecond)
	}
	for range 10 {
		if ev := emit(); ev.Seq == 0 {
			t.Fatal("emit after recovery was lost")
		}
	}
	// webhook delivery goes on after the store came back
	last := emit()
	sfutest.WaitFor(t, "the event emitted after the recovery to be delivered", wait, func() bool {
		for _, ev := range rx.delivered() {
			if ev.ID == last.ID {
				return true
			}
		}
		return false
	})
	if counterValue(t, l.recoveries) < 1 {
		t.Fatal("sluice_events_store_recoveries_total did not count the recovery")
	}
	if !strings.Contains(logs.String(), "event store recovered") {
		t.Fatalf("no log line says the store recovered:\n%s", tail(logs.String(), 20))
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
