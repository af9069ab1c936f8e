package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/cmd/sluice/loadgen"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// overloadHogs is how many busy loops take the daemon's CPU from it: with them the daemon gets
// about a ninth of its core, far from the quarter core 80 viewers need here.
const overloadHogs = 8

// CPU hogs appear beside a daemon serving 80 WHEP viewers (pinned to one CPU, the load test on
// the others): the daemon sheds the newest viewers, each told by stream.failed with reason
// overloaded (key mode: the event names it) and by its peer connection closing; then the
// shedding stops instead of cascading to everyone, and the survivors go on at full rate without
// loss. `sluice loadtest` reports all of it.
func TestLoadtestOverloadSheds(t *testing.T) {
	sfutest.RequireTool(t, "taskset")
	cpus := allowedCPUs(t)
	if len(cpus) < 2 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("this test needs 2 CPUs (the daemon's, and the load test's); it may use %v", cpus)
		}
		t.Skipf("this test needs 2 CPUs; it may use %v", cpus)
	}
	daemonCPU := strconv.Itoa(cpus[0])
	var others []string
	for _, c := range cpus[1:] {
		others = append(others, strconv.Itoa(c))
	}
	const key, secret = "loadkey", "loadtest-secret-0123456789abcdef"
	d := startDaemonUnder(t, fmt.Sprintf("auth: { keys: { %s: %q } }\n", key, secret), "taskset", "-c", daemonCPU)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "taskset", "-c", strings.Join(others, ","), binary, //nolint:gosec // the test's binary
		"--server", d.URL, "--api-key", key, "--api-secret", secret, "loadtest", "-o", "json",
		"-n", "80", "--ramp", "4s", "--settle", "2s", "--duration", "30s", "--baseline", "1s")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The hogs start with the measurement window: every viewer joined a daemon with a whole CPU.
	var progress strings.Builder
	hogs := &hogSet{t: t, cpu: daemonCPU}
	defer hogs.stop()
	scan := bufio.NewScanner(stderr)
	for scan.Scan() {
		progress.WriteString(scan.Text() + "\n")
		if strings.HasPrefix(scan.Text(), "measuring for") {
			hogs.start(overloadHogs)
		}
	}
	err = cmd.Wait()
	hogs.stop()
	if err != nil {
		t.Fatalf("sluice loadtest: %v\n%s%s", err, stdout.String(), progress.String())
	}
	t.Logf("loadtest report: %s", stdout.String())
	if hogs.started() == 0 {
		t.Fatalf("the window never started:\n%s", progress.String())
	}
	var rep loadgen.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("the report is not JSON: %v\n%s", err, stdout.String())
	}
	if rep.Connected < 72 || rep.Refused != 0 {
		t.Fatalf("%d of 80 viewers connected, %d refused, before any hog ran", rep.Connected, rep.Refused)
	}
	o := rep.Overload
	if o == nil || rep.Shed == 0 || o.Shed != rep.Shed {
		t.Fatalf("with %d hogs beside it the daemon shed no one (or the report disagrees with itself): %s", overloadHogs, stdout.String())
	}
	// Every shed viewer was told: the daemon's event names it, and its peer connection ended.
	if o.EventsError != "" || o.ShedNamed == nil || *o.ShedNamed != rep.Shed || o.Events != rep.Shed {
		t.Errorf("shed %d viewers, %d overloaded events (%q), %v of the shed named by one", rep.Shed, o.Events, o.EventsError, o.ShedNamed)
	}
	// A viewer whose close_notify was lost in the congested send queue notices within 15 s
	// (ICE times out), which only a late shed can outrun.
	end := 0.0
	if n := len(o.Timeline); n > 0 {
		end = o.Timeline[n-1].ToS
	}
	if o.ShedUnnoticed == nil || (*o.ShedUnnoticed != 0 && o.LastShedS < end-15) {
		t.Errorf("%v shed viewers never saw their session end", o.ShedUnnoticed)
	}
	// No cascade: many survive.
	if o.Survivors.Count < 10 || o.Survivors.Count+rep.Shed < rep.Connected {
		t.Errorf("%d survivors and %d shed of %d connected", o.Survivors.Count, rep.Shed, rep.Connected)
	}
	// The shedding stopped: after it began, 5 s went by without any, in which the viewers
	// got the whole stream (about 2.6 Mbit/s of video plus Opus) with at most 1 % loss that
	// their own sockets do not account for. While shedding, the daemon's queues lose 15 % or
	// more. The viewers read as browsers do, in this process on a CPU that the rest of `make
	// test` shares: one that does not get the CPU in time overflows its socket, which the
	// kernel counts (receiver_socket_drop_pct), and that loss is the machine's, not the
	// daemon's. The 1 % allows for moments of the daemon's share taken by the rest of the
	// suite without overloading it for long. (Something else may take the daemon's CPU
	// later, and the daemon sheds again: the stretch may be any after the first shed. A CI run
	// shed for 12 s, was quiet 6 s, shed again when another package's test took the CPU, and
	// was quiet 6 s to the window's end: 10 s asked more of the machine than of the daemon.)
	if from, to, kbps, loss, ok := quietStretch(o.Timeline, 5, 2200, 1); !ok {
		var after strings.Builder
		for _, p := range o.Timeline {
			if p.ToS > o.FirstShedS {
				fmt.Fprintf(&after, "  %.1f–%.1f s: %d playing, %d shed, %.0f kbit/s, %.3f %% lost (%.3f %% at their sockets)\n",
					p.FromS, p.ToS, p.Playing, p.Shed, p.BitrateKbps, p.LossPct, p.SocketDropPct)
			}
		}
		t.Errorf("no 5 s without shedding at full rate after the first shed (at %.1f s; the last at %.1f s):\n%s", o.FirstShedS, o.LastShedS, after.String())
	} else {
		t.Logf("quiet from %.0f s to %.0f s after the ramp began: %.0f kbit/s each, loss %.3f %% beyond their sockets' drops", from, to, kbps, loss)
	}
}

// quietStretch finds, after the first shed, seconds consecutive entries of the timeline with no
// shedding among them, in which the viewers playing (10 at least) received at least kbps each
// with at most lossPct of loss beyond what the kernel dropped at their sockets (averaged over
// the stretch).
func quietStretch(timeline []loadgen.PhaseReport, seconds, kbps, lossPct float64) (from, to, gotKbps, gotLoss float64, ok bool) {
	for i, first := range timeline {
		if first.Shed == 0 {
			continue
		}
		var d, bits, lost float64
		for _, p := range timeline[i:] {
			if p.Shed != first.Shed || p.Playing < 10 {
				break
			}
			dt := p.ToS - p.FromS
			d, bits, lost = d+dt, bits+p.BitrateKbps*dt, lost+max(0, p.LossPct-p.SocketDropPct)*dt
			if d >= seconds {
				if bits/d >= kbps && lost/d <= lossPct {
					return first.FromS, p.ToS, bits / d, lost / d, true
				}
				break
			}
		}
	}
	return 0, 0, 0, 0, false
}

// quietStretch tells the daemon's loss from the receivers': survivors losing 2.6 % at their own
// sockets (a CPU hog beside the load test) are quiet; losing it in the daemon, or still being
// shed, or getting less than the stream, is not.
func TestQuietStretch(t *testing.T) {
	timeline := func(shedEvery int, kbps, loss, atSockets float64) []loadgen.PhaseReport {
		var tl []loadgen.PhaseReport
		for i := range 20 {
			p := loadgen.PhaseReport{FromS: float64(i), ToS: float64(i + 1), Playing: 40, Shed: 5, BitrateKbps: kbps, LossPct: loss, SocketDropPct: atSockets}
			if shedEvery > 0 {
				p.Shed += i / shedEvery
			}
			tl = append(tl, p)
		}
		return tl
	}
	cases := []struct {
		name     string
		timeline []loadgen.PhaseReport
		quiet    bool
	}{
		{"clean", timeline(0, 2600, 0, 0), true},
		{"lost at the receivers' sockets", timeline(0, 2550, 2.6, 2.6), true},
		{"lost in the daemon", timeline(0, 2550, 2.6, 0.1), false},
		{"still shedding", timeline(3, 2600, 0, 0), false},
		{"below the stream's rate", timeline(0, 1500, 0, 0), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, _, _, ok := quietStretch(tc.timeline, 10, 2200, 1); ok != tc.quiet {
				t.Errorf("quiet = %v, want %v", ok, tc.quiet)
			}
		})
	}
}

// Past the CPU budget, new viewers are refused (503 overloaded) and the report counts them as
// refused, not failed. (With --receive-offload: each viewer got a socket of its own for it.)
func TestLoadtestRefusedPastBudget(t *testing.T) {
	d := startDaemon(t, "limits: { cpu_budget: 0.001 }\n") // the publisher alone is past it
	rep := d.loadtest(t, "-n", "3", "--ramp", "500ms", "--settle", "500ms", "--duration", "1s", "--baseline", "1s", "--receive-offload")
	if num(rep, "refused") != 3 || num(rep, "failed") != 0 || num(rep, "connected") != 0 || num(rep, "shed") != 0 {
		t.Fatalf("want 3 refused and nothing else: %v", rep)
	}
	if rep["receive_offload"] != true || num(rep, "subscribers_with_receive_offload") != 3 {
		t.Errorf("--receive-offload: %v, %v subscribers with it, want 3", rep["receive_offload"], rep["subscribers_with_receive_offload"])
	}
	o, ok := rep["overload"].(map[string]any)
	if !ok || num(o, "refused") != 3 {
		t.Fatalf("no overload section with the refusals: %v", rep)
	}
}

// allowedCPUs returns the CPUs this process may run on (Linux).
func allowedCPUs(t *testing.T) []int {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	var cpus []int
	for _, line := range strings.Split(string(status), "\n") {
		list, ok := strings.CutPrefix(line, "Cpus_allowed_list:")
		if !ok {
			continue
		}
		for _, part := range strings.Split(strings.TrimSpace(list), ",") {
			lo, hi, isRange := strings.Cut(part, "-")
			a, err1 := strconv.Atoi(lo)
			b := a
			var err2 error
			if isRange {
				b, err2 = strconv.Atoi(hi)
			}
			if err1 != nil || err2 != nil {
				t.Fatalf("cannot read Cpus_allowed_list %q", list)
			}
			for c := a; c <= b; c++ {
				cpus = append(cpus, c)
			}
		}
	}
	return cpus
}

// hogSet is busy loops pinned to one CPU. stop kills and waits for them; it is idempotent.
// Safe for concurrent use.
type hogSet struct {
	t    *testing.T
	cpu  string
	mu   sync.Mutex
	cmds []*exec.Cmd
	n    int // hogs ever started
}

func (h *hogSet) start(n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for range n {
		c := exec.Command("taskset", "-c", h.cpu, "sh", "-c", "while :; do :; done")
		if err := c.Start(); err != nil {
			h.t.Errorf("starting a hog: %v", err)
			return
		}
		h.cmds = append(h.cmds, c)
		h.n++
	}
}

func (h *hogSet) started() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

func (h *hogSet) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.cmds {
		_ = c.Process.Kill()
		_ = c.Wait()
	}
	h.cmds = nil
}
