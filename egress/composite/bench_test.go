package composite

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// BenchmarkComposite4x720p30 runs a grid of four 720p30 participants (H.264 testsrc2 at
// 2 Mbit/s and AAC, looped from a file without re-encoding) into a 1280x720 30 fps composite
// for 15 s per iteration, and reports what the composite costs: cores (the daemon's CPU plus its
// decoders' and encoder's, less the publishers' ffmpeg and what this process spent on the
// publishers alone before the composite started) and the proportional memory of its ffmpeg
// children. Run: go test -run - -bench Composite -benchtime 1x ./egress/composite/
func BenchmarkComposite4x720p30(b *testing.B) {
	ffmpeg := sfutest.RequireTool(b, "ffmpeg")
	clip := filepath.Join(b.TempDir(), "clip.ts")
	if out, err := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", //nolint:gosec // the test's ffmpeg
		"-f", "lavfi", "-i", "sine=f=440:r=48000", "-t", "10", "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "baseline",
		"-b:v", "2M", "-g", "60", "-c:a", "aac", "-f", "mpegts", "-muxdelay", "0", "-pes_payload_size", "0", clip).CombinedOutput(); err != nil {
		b.Fatalf("making the clip: %v\n%s", err, out)
	}
	hub, _ := sfutest.NewHub(b, nil)
	sfutest.RunHub(b, hub)
	m := NewManager(hub, Config{})
	b.Cleanup(m.Close)
	var pubs []*exec.Cmd
	for i := range 4 {
		p, err := hub.Join("bench", sfu.ParticipantSpec{Identity: fmt.Sprintf("p%d", i), Kind: sfu.ParticipantRTMP})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cmd := exec.CommandContext(ctx, ffmpeg, "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", clip, //nolint:gosec // the test's ffmpeg
			"-c", "copy", "-f", "mpegts", "-muxdelay", "0", "-pes_payload_size", "0", "-flush_packets", "1", "pipe:1")
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = readTS(bufio.NewReader(stdout), 0, &output{self: p}, func() {})
		}()
		b.Cleanup(func() { cancel(); <-done; _ = cmd.Wait(); p.Close(sfu.ReasonClientDisconnected, nil) })
		pubs = append(pubs, cmd)
	}
	publisher := map[int]bool{}
	for _, p := range pubs {
		publisher[p.Process.Pid] = true
	}
	time.Sleep(2 * time.Second)
	for range b.N {
		// The publishers alone: what this process spends reading them is not the composite's.
		base0 := cpuNow()
		time.Sleep(5 * time.Second)
		base := (cpuNow().self - base0.self) / 5
		_, release, err := m.Acquire(Spec{Room: "bench", Layout: LayoutGrid})
		if err != nil {
			b.Fatal(err)
		}
		time.Sleep(5 * time.Second) // warm-up: decoders and encoder start
		var rss int64
		for _, pid := range childPIDs() {
			if !publisher[pid] {
				rss += rssOf(pid)
			}
		}
		warm := cpuNow()
		time.Sleep(10 * time.Second)
		end := cpuNow()
		release()
		used := (end.total() - warm.total()) - (end.publishers(pubs) - warm.publishers(pubs)) - 10*base
		var enc, dec time.Duration
		for pid, t := range end.children {
			switch {
			case publisher[pid]:
			case strings.Contains(end.args[pid], "libx264"):
				enc += t - warm.children[pid]
			default:
				dec += t - warm.children[pid]
			}
		}
		b.ReportMetric(enc.Seconds()/10, "encoder-cores")
		b.ReportMetric(dec.Seconds()/10, "decoders-cores")
		b.ReportMetric((end.self-warm.self-10*base).Seconds()/10, "daemon-cores")
		b.ReportMetric(used.Seconds()/10, "cores")
		b.ReportMetric(float64(rss)/(1<<20), "children-PSS-MiB")
	}
}

// cpuSample is the CPU time of this process and of its live children.
type cpuSample struct {
	self     time.Duration
	children map[int]time.Duration
	args     map[int]string
}

func (s cpuSample) total() time.Duration {
	t := s.self
	for _, c := range s.children {
		t += c
	}
	return t
}

func (s cpuSample) publishers(pubs []*exec.Cmd) time.Duration {
	var t time.Duration
	for _, p := range pubs {
		t += s.children[p.Process.Pid]
	}
	return t
}

func cpuNow() cpuSample {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	s := cpuSample{self: time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), children: map[int]time.Duration{}, args: map[int]string{}}
	for _, pid := range childPIDs() {
		s.children[pid] = cpuOf(pid)
		args, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		s.args[pid] = string(args)
	}
	return s
}

// childPIDs lists this process's children.
func childPIDs() []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", os.Getpid(), os.Getpid()))
	var out []int
	if err != nil {
		return out
	}
	var pid int
	for _, f := range splitFields(string(b)) {
		if _, err := fmt.Sscan(f, &pid); err == nil {
			out = append(out, pid)
		}
	}
	// Children may be parented by other threads of this process.
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", os.Getpid()))
	seen := map[int]bool{}
	for _, p := range out {
		seen[p] = true
	}
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, f := range splitFields(string(b)) {
			if _, err := fmt.Sscan(f, &pid); err == nil && !seen[pid] {
				seen[pid] = true
				out = append(out, pid)
			}
		}
	}
	return out
}

func splitFields(s string) []string {
	var out []string
	start := -1
	for i, r := range s {
		if r == ' ' || r == '\n' {
			if start >= 0 {
				out = append(out, s[start:i])
				start = -1
			}
		} else if start < 0 {
			start = i
		}
	}
	if start >= 0 {
		out = append(out, s[start:])
	}
	return out
}

// cpuOf is a process's user+system time from /proc (clock ticks of 10 ms).
func cpuOf(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command's closing parenthesis: state is field 3; utime 14, stime 15.
	i := len(b) - 1
	for i > 0 && b[i] != ')' {
		i--
	}
	f := splitFields(string(b[i+2:]))
	var ut, st int64
	if len(f) > 12 {
		fmt.Sscan(f[11], &ut)
		fmt.Sscan(f[12], &st)
	}
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// rssOf is a process's proportional set size in bytes (its resident memory, shared libraries
// divided among the processes that map them).
func rssOf(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Pss:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSpace(v), &kb)
			return kb << 10
		}
	}
	return 0
}

// BenchmarkCompositeLatency measures how late a change in a participant's picture shows in the
// composite's output: the publisher (ffmpeg, real time) turns its picture from red to blue 4 s
// after its first frame reached the room; the time until the composite's output, decoded,
// shows blue in its tile is the latency (the decoding of the output included, as a viewer's).
func BenchmarkCompositeLatency(b *testing.B) {
	ffmpeg := sfutest.RequireTool(b, "ffmpeg")
	hub, _ := sfutest.NewHub(b, nil)
	sfutest.RunHub(b, hub)
	m := NewManager(hub, Config{})
	b.Cleanup(m.Close)
	const w, h = 1280, 720
	for i := range b.N {
		room := fmt.Sprintf("lat%d", i)
		p, err := hub.Join(room, sfu.ParticipantSpec{Identity: "cam", Kind: sfu.ParticipantRTMP})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cmd := exec.CommandContext(ctx, ffmpeg, "-hide_banner", "-loglevel", "error", "-re", //nolint:gosec // the test's ffmpeg
			"-f", "lavfi", "-i", "color=c=red:s=640x360:r=30", "-f", "lavfi", "-i", "sine=f=440:r=48000",
			"-vf", "drawbox=c=blue:t=fill:enable='gte(t,4)'", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
			"-g", "30", "-c:a", "aac", "-f", "mpegts", "-muxdelay", "0", "-pes_payload_size", "0", "-flush_packets", "1", "pipe:1")
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		firstFrame := make(chan time.Time, 1)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = readTS(bufio.NewReader(stdout), 0, &output{self: p}, func() {
				select {
				case firstFrame <- time.Now():
				default:
				}
			})
		}()
		_, release, err := m.Acquire(Spec{Room: room, Layout: LayoutGrid, Width: w, Height: h})
		if err != nil {
			b.Fatal(err)
		}
		wt := watch(b, hub, room, w, h)
		t0 := <-firstFrame
		flip := t0.Add(4 * time.Second)
		var seen time.Time
		for deadline := flip.Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if wt.colourAt(w/2, h/2) == "blue" {
				seen = time.Now()
				break
			}
		}
		release()
		cancel()
		<-done
		_ = cmd.Wait()
		p.Close(sfu.ReasonClientDisconnected, nil)
		if seen.IsZero() {
			b.Fatal("the change never showed")
		}
		b.ReportMetric(float64(seen.Sub(flip).Milliseconds()), "ms-latency")
	}
}
