package main

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/egress/egresstest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// broadcastYAML keeps the grace short so that a broadcast ends soon after its source.
const broadcastYAML = "broadcast: { grace: 3s, max_retry_duration: 1m }\n"

// The stream keys of these tests: no log line, event or API answer may carry them.
const (
	keyMain   = "sk-live-7Hq2ZpX9wLr4"
	keySecond = "sk-live-Second-3vB8"
	keyDead   = "sk-live-Dead-5kN1"
)

// broadcastEvents returns the broadcast.* events in the daemon's log.
func broadcastEvents(t *testing.T, d *daemonProc) []sfu.Event {
	t.Helper()
	resp, err := http.Get(d.URL + "/v1/events?since=0&type=broadcast.*")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var page struct {
		Events []sfu.Event `json:"events"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		t.Fatal(err)
	}
	return page.Events
}

func eventTypes(evs []sfu.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return out
}

func countType(evs []sfu.Event, typ string) int {
	n := 0
	for _, e := range evs {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// startBroadcast runs `sluice broadcast start` and returns the broadcast.
func startBroadcast(t *testing.T, d *daemonProc, args ...string) sfu.BroadcastInfo {
	t.Helper()
	out, err := d.cli(append([]string{"broadcast", "start", "-o", "json"}, args...)...)
	if err != nil {
		t.Fatalf("broadcast start: %v\n%s", err, out)
	}
	var b sfu.BroadcastInfo
	if err := json.Unmarshal([]byte(out), &b); err != nil {
		t.Fatalf("broadcast start output: %v\n%s", err, out)
	}
	return b
}

func showBroadcast(t *testing.T, d *daemonProc, id string) sfu.BroadcastInfo {
	t.Helper()
	out, err := d.cli("broadcast", "show", id, "-o", "json")
	if err != nil {
		t.Fatalf("broadcast show: %v\n%s", err, out)
	}
	var b sfu.BroadcastInfo
	if err := json.Unmarshal([]byte(out), &b); err != nil {
		t.Fatalf("broadcast show output: %v\n%s", err, out)
	}
	return b
}

// assertNoKeys fails when a stream key appears in the daemon's logs, its events or its API
// answers (list, show, status).
func assertNoKeys(t *testing.T, d *daemonProc, keys ...string) {
	t.Helper()
	var sources []string
	sources = append(sources, d.logs.String())
	for _, path := range []string{"/v1/events?since=0", "/v1/broadcasts", "/v1/status"} {
		sources = append(sources, getText(t, d.URL+path))
	}
	for _, args := range [][]string{{"broadcast", "list"}, {"broadcast", "list", "-o", "json"}, {"status"}} {
		out, _ := d.cli(args...)
		sources = append(sources, out)
	}
	for _, s := range sources {
		for _, k := range keys {
			if strings.Contains(s, k) {
				t.Errorf("stream key %q leaked: %s", k, grepLines(s, k))
			}
		}
	}
}

// TestBroadcastRTMPToPlatform: ffmpeg publishes RTMP into a room, a broadcast started before it
// pushes the stream to nginx-rtmp, and ends (source_ended) once the publisher is gone past the
// grace period. The platform's file decodes as H.264 + AAC and lasts as long as what was
// published (within 5 %).
func TestBroadcastRTMPToPlatform(t *testing.T) {
	sfutest.RequireTool(t, "ffmpeg")
	platform := egresstest.StartPlatform(t, egresstest.PlatformOptions{})
	d := startDaemon(t, broadcastYAML)
	b := startBroadcast(t, d, "--room", "show", "--url", platform.URL(keyMain))
	if b.Status != "starting" || len(b.Destinations) != 1 || b.URL == "" {
		t.Fatalf("broadcast at start: %+v", b)
	}
	const seconds = 12
	_, _, exited := ffmpegOBS(t, fmt.Sprintf("rtmp://127.0.0.1:%d/live/show", d.RTMPPort), seconds, 2)
	sfutest.WaitFor(t, "broadcast active", 20*time.Second, func() bool { return showBroadcast(t, d, b.ID).Status == "active" })
	if out, err := d.cli("status"); err != nil || !strings.Contains(out, b.ID) || !strings.Contains(grepLines(out, b.ID), "active") {
		t.Errorf("status does not show the active broadcast %s (%v):\n%s", b.ID, err, out)
	}
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		t.Fatal("ffmpeg did not finish")
	}
	sfutest.WaitFor(t, "broadcast ended by its source", 30*time.Second, func() bool { return showBroadcast(t, d, b.ID).Status == "complete" })
	evs := broadcastEvents(t, d)
	last := evs[len(evs)-1]
	if last.Type != sfu.EventBroadcastEnded || last.Reason != sfu.ReasonSourceEnded {
		t.Fatalf("events %v, last reason %q", eventTypes(evs), last.Reason)
	}
	if last.Broadcast.BytesSent < 100_000 || last.Broadcast.Participant == "" {
		t.Errorf("final broadcast object: %+v", last.Broadcast)
	}
	platform.Stop()
	files := platform.Recordings()
	if len(files) != 1 {
		t.Fatalf("platform recorded %d files, want 1", len(files))
	}
	p := egresstest.ProbeFile(t, files[0])
	t.Logf("platform file: %+v", p)
	if p.Video != "h264" || p.Audio != "aac" {
		t.Errorf("codecs %q/%q, want h264/aac", p.Video, p.Audio)
	}
	if math.Abs(p.Duration-seconds)/seconds > 0.05 {
		t.Errorf("duration %.2f s, want %d s within 5%%", p.Duration, seconds)
	}
	assertNoKeys(t, d, keyMain)
}

// TestBroadcastRefusedKey: the platform refuses the stream key (nginx on_publish answers 403):
// broadcast.failed after one attempt, no broadcast.reconnecting, no second attempt.
func TestBroadcastRefusedKey(t *testing.T) {
	attempts := make(chan string, 16)
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		attempts <- r.Form.Get("name")
		w.WriteHeader(http.StatusForbidden)
	}))
	defer auth.Close()
	platform := egresstest.StartPlatform(t, egresstest.PlatformOptions{OnPublish: auth.URL + "/on_publish"})
	d := startDaemon(t, broadcastYAML)
	b := startBroadcast(t, d, "--room", "show", "--url", platform.URL(keyMain))
	sfutest.WaitFor(t, "broadcast failed", 30*time.Second, func() bool { return showBroadcast(t, d, b.ID).Status == "failed" })
	got := showBroadcast(t, d, b.ID)
	if got.Error == nil || got.Error.Code != "destination_refused" {
		t.Errorf("error %+v, want destination_refused", got.Error)
	}
	// Long enough for a retry to have happened, had there been one.
	time.Sleep(2 * time.Second)
	if n := len(attempts); n != 1 {
		t.Errorf("%d publish attempts reached the platform, want 1", n)
	}
	evs := broadcastEvents(t, d)
	if countType(evs, sfu.EventBroadcastFailed) != 1 || countType(evs, sfu.EventBroadcastReconnecting) != 0 || countType(evs, sfu.EventBroadcastStarted) != 0 {
		t.Errorf("events %v, want one broadcast.failed", eventTypes(evs))
	}
	assertNoKeys(t, d, keyMain)
}

// waitEvent waits for the n-th event of typ and returns it.
func waitEvent(t *testing.T, d *daemonProc, typ string, n int, within time.Duration) sfu.Event {
	t.Helper()
	var found sfu.Event
	sfutest.WaitFor(t, fmt.Sprintf("%d × %s", n, typ), within, func() bool {
		seen := 0
		for _, e := range broadcastEvents(t, d) {
			if e.Type == typ {
				if seen++; seen == n {
					found = e
					return true
				}
			}
		}
		return false
	})
	return found
}

// TestBroadcastPlatformRestart: the platform is killed mid-broadcast and started again 10 s
// later: broadcast.reconnecting, then broadcast.started again, and the platform's new file
// decodes.
func TestBroadcastPlatformRestart(t *testing.T) {
	sfutest.RequireTool(t, "ffmpeg")
	platform := egresstest.StartPlatform(t, egresstest.PlatformOptions{})
	d := startDaemon(t, broadcastYAML)
	ffmpegOBS(t, fmt.Sprintf("rtmp://127.0.0.1:%d/live/show", d.RTMPPort), 60, 0)
	b := startBroadcast(t, d, "--room", "show", "--url", platform.URL(keyMain))
	waitEvent(t, d, sfu.EventBroadcastStarted, 1, 30*time.Second)
	time.Sleep(3 * time.Second) // some media before the crash
	platform.Kill()
	rec := waitEvent(t, d, sfu.EventBroadcastReconnecting, 1, 30*time.Second)
	if rec.Error == nil || rec.Broadcast.Reconnects < 1 || !strings.HasSuffix(rec.Broadcast.URL, "/***") {
		t.Errorf("broadcast.reconnecting: %+v error %+v", rec.Broadcast, rec.Error)
	}
	time.Sleep(10 * time.Second) // the platform stays down for 10 s
	restarted := time.Now()
	platform.Restart()
	again := waitEvent(t, d, sfu.EventBroadcastStarted, 2, 30*time.Second)
	t.Logf("active again %v after the platform restarted (event at %s), reconnects %d",
		time.Since(restarted).Round(10*time.Millisecond), again.Time.Format(time.TimeOnly), again.Broadcast.Reconnects)
	if s := showBroadcast(t, d, b.ID); s.Status != "active" || s.Destinations[0].Status != "active" {
		t.Errorf("after the restart: %+v", s)
	}
	time.Sleep(6 * time.Second) // media after the reconnect
	if out, err := d.cli("broadcast", "stop", b.ID); err != nil {
		t.Fatalf("broadcast stop: %v\n%s", err, out)
	}
	platform.Stop()
	evs := broadcastEvents(t, d)
	if evs[len(evs)-1].Type != sfu.EventBroadcastEnded || evs[len(evs)-1].Reason != sfu.ReasonStopped || countType(evs, sfu.EventBroadcastFailed) != 0 {
		t.Errorf("events %v", eventTypes(evs))
	}
	files := platform.Recordings()
	if len(files) < 2 {
		t.Fatalf("platform files %v, want one before and one after the restart", files)
	}
	p := egresstest.ProbeFile(t, files[len(files)-1])
	t.Logf("file after the restart: %+v", p)
	if p.Video != "h264" || p.Audio != "aac" || p.Duration < 4 {
		t.Errorf("file after the restart: %+v", p)
	}
	assertNoKeys(t, d, keyMain)
}

// TestBroadcastTwoDestinationsOneDead: one destination refuses connections, the other is live:
// the broadcast is active, the live one too, the dead one reconnects. Then the dead one is
// removed and another live one added while the first keeps going.
func TestBroadcastTwoDestinationsOneDead(t *testing.T) {
	sfutest.RequireTool(t, "ffmpeg")
	platform := egresstest.StartPlatform(t, egresstest.PlatformOptions{})
	d := startDaemon(t, broadcastYAML)
	ffmpegOBS(t, fmt.Sprintf("rtmp://127.0.0.1:%d/live/show", d.RTMPPort), 60, 2)
	dead := fmt.Sprintf("rtmp://127.0.0.1:%d/live/%s", sfutest.FreeTCPPort(t), keyDead)
	b := startBroadcast(t, d, "--room", "show", "--url", platform.URL(keyMain), "--url", dead)
	waitEvent(t, d, sfu.EventBroadcastStarted, 1, 30*time.Second)
	rec := waitEvent(t, d, sfu.EventBroadcastReconnecting, 1, 30*time.Second)
	if !strings.Contains(rec.Broadcast.URL, "127.0.0.1") || rec.Broadcast.URL == platform.URL("***") {
		t.Errorf("reconnecting names %s, want the dead destination", rec.Broadcast.URL)
	}
	s := showBroadcast(t, d, b.ID)
	if s.Status != "active" || len(s.Destinations) != 2 || s.Destinations[0].Status != "active" || s.Destinations[1].Status == "active" {
		t.Fatalf("with one dead destination: %+v", s)
	}
	sent := s.Destinations[0].BytesSent
	sfutest.WaitFor(t, "the live destination keeps sending", 20*time.Second, func() bool {
		return showBroadcast(t, d, b.ID).Destinations[0].BytesSent > sent+100_000
	})
	m := getText(t, d.URL+"/metrics")
	for _, want := range []string{`sluice_broadcasts{status="active"} 1`, `sluice_broadcast_destinations{status="active"} 1`, "sluice_broadcast_sent_bytes "} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics has no %s:\n%s", want, grepLines(m, "sluice_broadcast"))
		}
	}
	// Swap the dead destination for a live one; the first is not interrupted.
	if out, err := d.cli("broadcast", "update", b.ID, "--remove-url", dead, "--add-url", platform.URL(keySecond)); err != nil {
		t.Fatalf("broadcast update: %v\n%s", err, out)
	}
	sfutest.WaitFor(t, "the added destination active", 30*time.Second, func() bool {
		s := showBroadcast(t, d, b.ID)
		return len(s.Destinations) == 2 && s.Destinations[1].Status == "active" && s.Destinations[0].Status == "active"
	})
	time.Sleep(4 * time.Second)
	if out, err := d.cli("broadcast", "stop", b.ID); err != nil {
		t.Fatalf("broadcast stop: %v\n%s", err, out)
	}
	platform.Stop()
	files := platform.Recordings()
	if len(files) != 2 {
		t.Fatalf("platform files %v, want one per live destination", files)
	}
	for _, f := range files {
		if p := egresstest.ProbeFile(t, f); p.Video != "h264" || p.Audio != "aac" {
			t.Errorf("%s: %+v", f, p)
		}
	}
	assertNoKeys(t, d, keyMain, keySecond, keyDead)
}
