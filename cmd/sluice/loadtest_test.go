package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// loadtest runs `sluice loadtest` against d with a generous deadline and decodes its JSON
// report (stdout; the progress lines go to stderr).
func (d *daemonProc) loadtest(t *testing.T, args ...string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args = append([]string{"--server", d.URL, "loadtest", "-o", "json",
		"--rtsp-url", fmt.Sprintf("rtsp://127.0.0.1:%d", d.RTSPPort)}, args...)
	cmd := exec.CommandContext(ctx, binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("sluice loadtest: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	var rep map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("the report is not JSON: %v\n%s", err, stdout.String())
	}
	t.Logf("loadtest report: %s", stdout.String())
	return rep
}

// checkViewers asserts a group of viewers all connected and got the clip (about 2.6 Mbit/s of
// video plus Opus) without loss.
func checkViewers(t *testing.T, what string, rep map[string]any, want int, connected, failed, bitrate string) {
	t.Helper()
	if got := num(rep, connected); got != float64(want) {
		t.Errorf("%s: %s = %v, want %d (first error %v)", what, connected, got, want, rep["first_error"])
	}
	if got := num(rep, failed); got != 0 {
		t.Errorf("%s: %s = %v, want 0 (first error %v)", what, failed, got, rep["first_error"])
	}
	if kbps := num(rep, bitrate); kbps < 1800 || kbps > 3800 {
		t.Errorf("%s: %s = %v kbit/s, want about 2600", what, bitrate, kbps)
	}
	if loss := num(rep, "packet_loss_pct"); loss != 0 {
		t.Errorf("%s: loss %v %%, want 0", what, loss)
	}
	if p50, p95 := num(rep, "setup_p50_ms"), num(rep, "setup_p95_ms"); p50 <= 0 || p95 < p50 {
		t.Errorf("%s: setup p50 %v ms, p95 %v ms", what, p50, p95)
	}
	if _, ok := rep["jitter_ms"].(float64); !ok {
		t.Errorf("%s: no jitter_ms in %v", what, rep)
	}
}

// `sluice loadtest` publishes the built-in clip, plays it with WHEP subscribers and then RTSP
// readers over TCP, and reports what they received and what the daemon spent, net of the
// publisher alone.
func TestLoadtestWHEPAndRTSP(t *testing.T) {
	d := startDaemon(t, "")
	rep := d.loadtest(t, "-n", "3", "--rtsp", "2", "--ramp", "1s", "--settle", "1s", "--duration", "3s", "--baseline", "1s")
	checkViewers(t, "whep", rep, 3, "connected", "failed", "bitrate_kbps_per_subscriber")
	// The viewers read as browsers do (no receive offload), and the report says what the
	// kernel dropped at their sockets.
	if rep["receive_offload"] != false || num(rep, "subscribers_with_receive_offload") != 0 {
		t.Errorf("stock viewers reported with receive offload: %v, %v", rep["receive_offload"], rep["subscribers_with_receive_offload"])
	}
	for _, k := range []string{"receiver_socket_drops", "udp_rcvbuf_errors"} {
		if _, ok := rep[k].(float64); !ok {
			t.Errorf("no %s in the report: %v", k, rep)
		}
	}
	rtsp, ok := rep["rtsp"].(map[string]any)
	if !ok {
		t.Fatalf("no rtsp section in the report: %v", rep)
	}
	if num(rtsp, "readers") != 2 {
		t.Errorf("rtsp readers %v, want 2", rtsp["readers"])
	}
	checkViewers(t, "rtsp", rtsp, 2, "connected", "failed", "bitrate_kbps_per_reader")

	// The daemon's totals are positive; the net costs per viewer are there and not negative
	// (with a handful of viewers they are within the 10 ms resolution of the CPU counter).
	for _, k := range []string{"daemon_cpu_cores", "daemon_cpu_cores_publisher_only", "daemon_rss_mib", "daemon_idle_rss_mib", "packets_sent_per_second"} {
		if num(rep, k) <= 0 {
			t.Errorf("%s = %v, want > 0", k, rep[k])
		}
	}
	for _, k := range []string{"daemon_cpu_cores", "daemon_rss_mib", "packets_sent_per_second"} {
		if num(rtsp, k) <= 0 {
			t.Errorf("rtsp %s = %v, want > 0", k, rtsp[k])
		}
	}
	for _, k := range []string{"cpu_ms_per_second_per_reader", "cpu_per_packet_us", "rss_per_reader_mib"} {
		if _, ok := rtsp[k].(float64); !ok {
			t.Errorf("rtsp %s missing: %v", k, rtsp)
		}
	}
	if v := num(rtsp, "cpu_ms_per_second_per_reader"); v < 0 {
		t.Errorf("rtsp cpu per reader %v", v)
	}
	// Each viewer gets about 350 packets a second.
	if pps := num(rtsp, "packets_sent_per_second"); pps < 5*250 {
		t.Errorf("packets sent per second with 3 subscribers and 2 readers: %v", pps)
	}
}

// In key mode the readers carry a subscribe token, which the report never shows.
func TestLoadtestRTSPKeyMode(t *testing.T) {
	const key, secret = "loadkey", "loadtest-secret-0123456789abcdef"
	d := startDaemon(t, fmt.Sprintf("auth: { keys: { %s: %q } }\n", key, secret))
	rep := d.loadtest(t, "--api-key", key, "--api-secret", secret,
		"-n", "0", "--rtsp", "2", "--ramp", "500ms", "--settle", "1s", "--duration", "2s", "--baseline", "1s")
	rtsp, ok := rep["rtsp"].(map[string]any)
	if !ok {
		t.Fatalf("no rtsp section in the report: %v", rep)
	}
	checkViewers(t, "rtsp", rtsp, 2, "connected", "failed", "bitrate_kbps_per_reader")
	if num(rep, "subscribers") != 0 || num(rep, "connected") != 0 {
		t.Errorf("-n 0 reports WHEP subscribers: %v", rep)
	}
	if strings.Contains(d.logs.String(), "token=") {
		t.Error("the daemon logged a token")
	}
}
