package webhooks

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
)

// BenchmarkEmit measures storing one event in the embedded log (synchronous ack).
func BenchmarkEmit(b *testing.B) { benchEmit(b, openTestLog(b, b.TempDir(), nil)) }

// benchEmit stores b.N participant.updated events of one room in l.
func benchEmit(b *testing.B, l *Log) {
	room := &sfu.RoomInfo{Name: "lobby", SID: "RM_1", CreatedAt: time.Now()}
	part := &sfu.ParticipantInfo{SID: "PA_1", Identity: "obs", Kind: "rtmp", JoinedAt: time.Now()}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		l.Emit(&sfu.Event{Type: sfu.EventParticipantUpdated, Room: room, Participant: part})
	}
}

// BenchmarkAppendAndDeliver measures events stored and delivered (signed, POSTed, 2xx) to one
// local endpoint, over 16 rooms.
func BenchmarkAppendAndDeliver(b *testing.B) {
	l := openTestLog(b, b.TempDir(), nil)
	var got atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		got.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	b.Cleanup(srv.Close)
	startDeliverer(b, l, testConfig(EndpointConfig{ID: "bench", URL: srv.URL}), nil)
	rooms := make([]*sfu.RoomInfo, 16)
	for i := range rooms {
		rooms[i] = &sfu.RoomInfo{Name: fmt.Sprintf("room-%d", i), SID: fmt.Sprintf("RM_%d", i)}
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		l.Emit(&sfu.Event{Type: sfu.EventRoomUpdated, Room: rooms[i%len(rooms)]})
	}
	for got.Load() < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkStateChangeToWebhook measures the latency from a state change in the core (a room
// created through the hub) to its webhook being received, and reports p50 and p99.
func BenchmarkStateChangeToWebhook(b *testing.B) {
	l := openTestLog(b, b.TempDir(), nil)
	arrived := make(chan time.Time, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
		arrived <- time.Now()
	}))
	b.Cleanup(srv.Close)
	startDeliverer(b, l, testConfig(EndpointConfig{ID: "bench", URL: srv.URL, Events: []string{sfu.EventRoomStarted}}), nil)
	hub, err := sfu.NewHub(sfu.Options{Config: sfu.DefaultConfig(), Emitter: l})
	if err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if _, _, err := hub.CreateRoom(fmt.Sprintf("r%d", i), sfu.RoomOptions{}); err != nil {
			b.Fatal(err)
		}
		select {
		case at := <-arrived:
			lat = append(lat, at.Sub(start))
		case <-time.After(30 * time.Second):
			b.Fatal("no webhook within 30 s")
		}
	}
	b.StopTimer()
	hub.Close()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkStateChangeToWebhookAt500 paces state changes (room metadata updates over 16 rooms,
// through the hub) at 500 a second and measures each one's latency from the change to its
// webhook being received, signed, over HTTP. Run with -benchtime=2500x (5 s of load).
func BenchmarkStateChangeToWebhookAt500(b *testing.B) {
	const rate = 500
	l := openTestLog(b, b.TempDir(), nil)
	var mu sync.Mutex
	changed := map[string]time.Time{}
	lat := make([]time.Duration, 0, b.N)
	var got atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		at := time.Now()
		var ev sfu.Event
		_ = json.NewDecoder(r.Body).Decode(&ev)
		w.WriteHeader(http.StatusNoContent)
		mu.Lock()
		if start, ok := changed[ev.Room.Metadata]; ok {
			lat = append(lat, at.Sub(start))
		}
		mu.Unlock()
		got.Add(1)
	}))
	b.Cleanup(srv.Close)
	startDeliverer(b, l, testConfig(EndpointConfig{ID: "bench", URL: srv.URL, Events: []string{sfu.EventRoomUpdated}}), nil)
	hub, err := sfu.NewHub(sfu.Options{Config: sfu.DefaultConfig(), Emitter: l})
	if err != nil {
		b.Fatal(err)
	}
	defer hub.Close()
	rooms := make([]*sfu.Room, 16)
	for i := range rooms {
		if rooms[i], _, err = hub.CreateRoom(fmt.Sprintf("r%d", i), sfu.RoomOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	tick := time.NewTicker(time.Second / rate)
	defer tick.Stop()
	for i := range b.N {
		<-tick.C
		md := strconv.Itoa(i)
		mu.Lock()
		changed[md] = time.Now()
		mu.Unlock()
		if err := rooms[i%len(rooms)].SetMetadata(md); err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for got.Load() < int64(b.N) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	if len(lat) < b.N {
		b.Fatalf("%d of %d webhooks arrived", len(lat), b.N)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
}
