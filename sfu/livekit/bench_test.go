package livekit

import (
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu/sfutest"
)

// totalReceived sums the packets every client received.
func totalReceived(cs []*lkClient) int64 {
	var n int64
	for _, c := range cs {
		c.mu.Lock()
		for _, cnt := range c.packets {
			n += cnt.Load()
		}
		c.mu.Unlock()
	}
	return n
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRoom90 is a room of 10 LiveKit participants, each publishing one Opus track and
// subscribed to the other nine (90 subscriptions, 50 packets a second each). An op is one
// packet delivered to a subscriber. Reported: the process's CPU per delivered packet and per
// subscription (as a share of one core); the process holds the clients too (pion, SRTP on both
// sides), so these bound sluice's own cost from above. Run with a fixed count, e.g.
// -benchtime 20000x (the room is built once per run).
func BenchmarkRoom90(b *testing.B) {
	e := newEnv(b)
	var cs []*lkClient
	for i := range 10 {
		cs = append(cs, e.connect(b, string(rune('a'+i))+"-bench", true, "1"))
	}
	sfutest.WaitFor(b, "90 subscriptions flowing", 60*time.Second, func() bool {
		for _, c := range cs {
			c.mu.Lock()
			n := 0
			for _, cnt := range c.packets {
				if cnt.Load() > 0 {
					n++
				}
			}
			c.mu.Unlock()
			if n < 9 {
				return false
			}
		}
		return true
	})
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0, wall0 := totalReceived(cs), cpuTime(), time.Now()
	for totalReceived(cs) < start+int64(b.N) {
		time.Sleep(5 * time.Millisecond)
	}
	cpu, wall := cpuTime()-cpu0, time.Since(wall0)
	b.StopTimer()
	delivered := totalReceived(cs) - start
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(delivered), "cpu-ns/pkt")
	b.ReportMetric(100*cpu.Seconds()/wall.Seconds()/90, "core%/sub")
	b.ReportMetric(float64(delivered)/wall.Seconds(), "pkt/s")
}

// delivered sums the packets the room's subscriptions delivered to their down tracks.
func (e *env) delivered() uint64 {
	r := e.hub.Room("meet")
	if r == nil {
		return 0
	}
	var n uint64
	for _, p := range r.Participants() {
		for _, sub := range p.Subscriptions() {
			n += sub.Delivered()
		}
	}
	return n
}

// BenchmarkRoom90Server is BenchmarkRoom90 with the ten clients in another process (this test
// binary running TestRoom90Clients), so the CPU measured is sluice's alone: the LiveKit
// sessions, the fan-out and the down tracks' SRTP and sends. An op is one packet a
// subscription delivered. Run with a fixed count, e.g. -benchtime 20000x.
func BenchmarkRoom90Server(b *testing.B) {
	e := newEnv(b)
	cmd := exec.Command(os.Args[0], "-test.run=^TestRoom90Clients$", "-test.timeout=10m")
	cmd.Env = append(os.Environ(), "SLUICE_BENCH_URL="+e.url)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr // its failures; its PASS goes nowhere
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = stdin.Close() // the clients leave when their stdin closes
		_ = cmd.Wait()
	}()
	sfutest.WaitFor(b, "90 subscriptions flowing", 60*time.Second, func() bool {
		r := e.hub.Room("meet")
		if r == nil {
			return false
		}
		n := 0
		for _, p := range r.Participants() {
			for _, sub := range p.Subscriptions() {
				if sub.Delivered() > 0 {
					n++
				}
			}
		}
		return n == 90
	})
	b.ResetTimer()
	start, cpu0, wall0 := e.delivered(), cpuTime(), time.Now()
	for e.delivered() < start+uint64(b.N) {
		time.Sleep(5 * time.Millisecond)
	}
	cpu, wall := cpuTime()-cpu0, time.Since(wall0)
	b.StopTimer()
	delivered := e.delivered() - start
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(delivered), "cpu-ns/pkt")
	b.ReportMetric(100*cpu.Seconds()/wall.Seconds()/90, "core%/sub")
	b.ReportMetric(float64(delivered)/wall.Seconds(), "pkt/s")
}

// TestRoom90Clients is BenchmarkRoom90Server's client process: ten publishing, auto-subscribing
// clients of the server SLUICE_BENCH_URL names, until stdin closes. Without it, it does nothing.
func TestRoom90Clients(t *testing.T) {
	url := os.Getenv("SLUICE_BENCH_URL")
	if url == "" {
		return
	}
	e := &env{url: url, http: "http" + strings.TrimPrefix(url, "ws")}
	for i := range 10 {
		e.connect(t, string(rune('a'+i))+"-bench", true, "1")
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
}
