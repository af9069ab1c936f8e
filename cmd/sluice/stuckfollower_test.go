package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu/sfutest"
)

// followerTimeout is the daemon's events.follower_timeout in TestStuckFollowerIsCutOff.
const followerTimeout = 3 * time.Second

// sseFollower is a healthy status-stream watcher: it records when each room.updated of the
// test arrived, by the metadata's sequence number.
type sseFollower struct {
	mu   sync.Mutex
	seen map[int]time.Time
	done chan struct{}
}

func followEvents(t *testing.T, ctx context.Context, base string) *sseFollower {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/events?follow=1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("follow: %s", resp.Status)
	}
	f := &sseFollower{seen: map[int]time.Time{}, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		defer resp.Body.Close()
		_ = readSSE(resp.Body, func() {}, func(_ uint64, data []byte) error {
			var e struct {
				Type string `json:"type"`
				Room struct {
					Metadata string `json:"metadata"`
				} `json:"room"`
			}
			if json.Unmarshal(data, &e) != nil || e.Type != "room.updated" {
				return nil
			}
			var n int
			if _, err := fmt.Sscanf(e.Room.Metadata, "%d:", &n); err == nil {
				f.mu.Lock()
				f.seen[n] = time.Now()
				f.mu.Unlock()
			}
			return nil
		})
	}()
	return f
}

func (f *sseFollower) at(n int) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	at, ok := f.seen[n]
	return at, ok
}

// A status-stream watcher that stops reading (a SIGSTOP'd curl) beside ten healthy ones while
// ~10 MB of events go by: the healthy ones get every event without waiting for the stuck one,
// the stuck one is cut off once its buffers are full and events.follower_timeout passed, and
// the daemon's goroutines return to where they were.
func TestStuckFollowerIsCutOff(t *testing.T) {
	curl := sfutest.RequireTool(t, "curl")
	d := startDaemon(t, fmt.Sprintf("events: { follower_timeout: %s }\n", followerTimeout))
	if code, err := apiDo(d.URL, "POST", "/v1/rooms", `{"name":"busy","empty_timeout":"10m"}`); err != nil || code != http.StatusCreated {
		t.Fatalf("create room: %d %v", code, err)
	}
	goroutines := func() float64 { return metricSum(t, d.URL, "go_goroutines") }
	before := goroutines()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var healthy []*sseFollower
	for range 10 {
		healthy = append(healthy, followEvents(t, ctx, d.URL))
	}
	stuck := exec.Command(curl, "-sN", "-o", "/dev/null", d.URL+"/v1/events?follow=1") //nolint:gosec // the test's own tool
	if err := stuck.Start(); err != nil {
		t.Fatal(err)
	}
	stuckExited := make(chan struct{})
	go func() { _ = stuck.Wait(); close(stuckExited) }()
	t.Cleanup(func() {
		_ = stuck.Process.Signal(syscall.SIGCONT)
		_ = stuck.Process.Kill()
		<-stuckExited
	})
	// the stuck watcher is connected before it stops reading
	sfutest.WaitFor(t, "curl to connect", 10*time.Second, func() bool { return tcpState(stuck.Process.Pid, false) == tcpEstablished })
	if err := stuck.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}

	// ~10 MB of room.updated events: more than the stuck watcher's socket buffers hold
	const events = 200
	pad := strings.Repeat("x", 48<<10)
	var lag time.Duration
	for i := range events {
		body, _ := json.Marshal(map[string]string{"metadata": fmt.Sprintf("%d:%s", i, pad)})
		if code, err := apiDo(d.URL, "PATCH", "/v1/rooms/busy", string(body)); err != nil || code != http.StatusOK {
			t.Fatalf("update %d: %d %v", i, code, err)
		}
		sent := time.Now()
		for w, f := range healthy {
			var got time.Time
			sfutest.WaitFor(t, fmt.Sprintf("watcher %d to see update %d", w, i), 10*time.Second, func() bool {
				var ok bool
				got, ok = f.at(i)
				return ok
			})
			lag = max(lag, got.Sub(sent))
		}
	}
	t.Logf("%d updates of 48 KiB: the slowest healthy watcher got one %v after the API answered", events, lag.Round(time.Millisecond))
	// A healthy watcher waiting behind the stuck one would wait for its cut-off.
	if lag >= followerTimeout {
		t.Errorf("a healthy watcher waited %v for an event: as long as the stuck one's cut-off", lag)
	}

	// The daemon gives up on the stuck watcher: once resumed, curl finds its stream ended.
	// (its FIN waits behind the data curl has not read: the daemon's side leaves ESTABLISHED)
	sfutest.WaitFor(t, "the daemon to close the stuck watcher's stream", 30*time.Second, func() bool {
		st := tcpState(stuck.Process.Pid, true)
		return st != "" && st != tcpEstablished
	})
	if err := stuck.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stuckExited:
	case <-time.After(10 * time.Second):
		t.Fatal("the stuck watcher's stream is still open after it resumed")
	}

	cancel()
	for _, f := range healthy {
		<-f.done
	}
	sfutest.WaitFor(t, "the daemon's goroutines to return to where they were", 20*time.Second, func() bool {
		return goroutines() <= before+5
	})
	if n := bytes.Count([]byte(d.logs.String()), []byte("level=ERROR")); n > 0 {
		t.Errorf("%d errors logged", n)
	}
}

// tcpEstablished is the ESTABLISHED state of /proc/net/tcp.
const tcpEstablished = "01"

// tcpState returns the state of the (first) TCP socket of process pid, or with peer of the
// socket at its other end (on this host); "" when there is none.
func tcpState(pid int, peer bool) string {
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	var rows [][]string
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		raw, _ := os.ReadFile(table)
		for _, line := range strings.Split(string(raw), "\n")[1:] {
			if f := strings.Fields(line); len(f) > 9 {
				rows = append(rows, f)
			}
		}
	}
	for _, f := range rows {
		if !inodes[f[9]] {
			continue
		}
		if !peer {
			return f[3]
		}
		for _, g := range rows {
			if g[1] == f[2] && g[2] == f[1] {
				return g[3]
			}
		}
		return ""
	}
	return ""
}
