package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu/sfutest"
)

// chromiumFlags is the command line of shared/CHROMIUM.md: headless, no traffic beyond
// loopback, a fake camera and microphone, ICE on loopback only.
var chromiumFlags = []string{
	"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
	"--disable-background-networking", "--disable-component-update", "--disable-sync",
	"--disable-default-apps", "--disable-extensions", "--disable-breakpad", "--disable-field-trial-config",
	"--metrics-recording-only", "--no-default-browser-check", "--password-store=basic", "--use-mock-keychain",
	"--disable-background-timer-throttling", "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows",
	"--disable-features=WebRtcHideLocalIpsWithMdns,NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,PreconnectToSearch,HttpsUpgrades,LensOverlay",
	"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.*, EXCLUDE ::1, EXCLUDE [::1]",
	"--use-fake-device-for-media-stream=fps=30", "--use-fake-ui-for-media-stream",
	"--autoplay-policy=no-user-gesture-required",
	"--webrtc-ip-handling-policy=default_public_interface_only",
	"--remote-debugging-port=0", // keeps headless Chromium running a page instead of exiting
}

// pageServer serves the test pages from their own origin and collects what they report.
type pageServer struct {
	srv     *httptest.Server
	mu      sync.Mutex
	reports map[string]map[string]any
	pages   map[string]*exec.Cmd // by id
}

// extra adds routes of a test's own (the built-in pages, a library).
func newPageServer(t *testing.T, extra ...func(*http.ServeMux)) *pageServer {
	t.Helper()
	return newPageServerAt(t, "127.0.0.1:0", extra...)
}

// newPageServerAt is newPageServer listening on addr (an address a page in a network namespace
// reaches).
func newPageServerAt(t *testing.T, addr string, extra ...func(*http.ServeMux)) *pageServer {
	t.Helper()
	ps := &pageServer{reports: map[string]map[string]any{}, pages: map[string]*exec.Cmd{}}
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServer(http.Dir("testdata/pages")))
	// livekit-client's UMD build, installed by `npm ci` (see .ci/run).
	mux.Handle("GET /lib/", http.StripPrefix("/lib/", http.FileServer(http.Dir(livekitClientDist))))
	mux.HandleFunc("POST /report", func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if json.Unmarshal(body, &m) == nil {
			ps.mu.Lock()
			ps.reports[r.URL.Query().Get("id")] = m
			ps.mu.Unlock()
		}
		w.WriteHeader(http.StatusNoContent)
	})
	for _, add := range extra {
		add(mux)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ps.srv = &httptest.Server{Listener: ln, Config: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	ps.srv.Start()
	t.Cleanup(ps.srv.Close)
	return ps
}

// report returns the last report of a page (nil before the first).
func (ps *pageServer) report(id string) map[string]any {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.reports[id]
}

func num(m map[string]any, key string) float64 {
	f, _ := m[key].(float64)
	return f
}

// waitReport waits until page id reports something cond accepts; a page error fails at once.
func (ps *pageServer) waitReport(t *testing.T, id, what string, d time.Duration, cond func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		r := ps.report(id)
		if r != nil {
			if e, ok := r["error"]; ok {
				t.Fatalf("page %s failed: %v", id, e)
			}
			if cond(r) {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("page %s: timed out after %v waiting for %s; last report %v", id, d, what, r)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// openPage starts a headless Chromium on a test page; it is killed when the test ends.
func (ps *pageServer) openPage(t *testing.T, page, id string, query url.Values) {
	t.Helper()
	ps.openPageUnder(t, nil, nil, page, id, query)
}

// openPageUnder is openPage with Chromium run under a command (ip netns exec NS …) and with
// flags added after chromiumFlags (a flag given twice takes its last value).
func (ps *pageServer) openPageUnder(t *testing.T, prefix, flags []string, page, id string, query url.Values) {
	t.Helper()
	bin := sfutest.RequireTool(t, "chromium")
	query.Set("id", id)
	target := ps.srv.URL + "/" + page + "?" + query.Encode()
	args := append(append(append(append([]string{}, prefix...), bin), chromiumFlags...), flags...)
	args = append(args, "--user-data-dir="+t.TempDir(), target)
	cmd := exec.Command(args[0], args[1:]...) //nolint:gosec // the test's own tools
	logs := &sfutest.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // kill its helper processes too
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ps.mu.Lock()
	ps.pages[id] = cmd
	ps.mu.Unlock()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("chromium %s log:\n%s", id, tail(logs.String(), 40))
		}
	})
}

// closePage kills the Chromium of page id, as closing the browser would.
func (ps *pageServer) closePage(t *testing.T, id string) {
	t.Helper()
	ps.mu.Lock()
	cmd := ps.pages[id]
	ps.mu.Unlock()
	if cmd == nil {
		t.Fatalf("no page %s", id)
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}

func requireChromium(t *testing.T) {
	t.Helper()
	sfutest.RequireTool(t, "chromium")
	if os.Getenv("SLUICE_SKIP_BROWSER") != "" && os.Getenv("CI") != "true" {
		t.Skip("SLUICE_SKIP_BROWSER is set")
	}
}

// Headless Chromium publishes its fake camera and microphone over WHIP; a second Chromium plays
// the room over WHEP and decodes video frames and audio.
func TestChromiumWHIPToWHEP(t *testing.T) {
	requireChromium(t)
	d := startDaemon(t, "")
	ps := newPageServer(t)

	ps.openPage(t, "publish.html", "pub", url.Values{"whip": {d.URL + "/whip/browser"}})
	pub := ps.waitReport(t, "pub", "frames sent", 30*time.Second, func(r map[string]any) bool {
		return r["state"] == "connected" && num(r, "framesSent") > 30 && num(r, "audioPacketsSent") > 20
	})
	if pub["videoCodec"] != "video/H264" {
		t.Errorf("the browser sends %v; the answer should have made it H.264", pub["videoCodec"])
	}

	ps.openPage(t, "play.html", "view", url.Values{"whep": {d.URL + "/whep/browser"}})
	first := ps.waitReport(t, "view", "decoded video and audio", 30*time.Second, func(r map[string]any) bool {
		return num(r, "framesDecoded") > 30 && num(r, "frameWidth") > 0 && num(r, "totalSamplesReceived") > 0
	})
	time.Sleep(2 * time.Second)
	later := ps.report("view")
	if num(later, "framesDecoded") <= num(first, "framesDecoded") || num(later, "totalSamplesReceived") <= num(first, "totalSamplesReceived") {
		t.Fatalf("playback stalled: %v then %v", first, later)
	}
	if later["audioCodec"] != "audio/opus" || later["videoCodec"] != "video/H264" {
		t.Errorf("codecs %v %v", later["videoCodec"], later["audioCodec"])
	}
	out, err := d.cli("status")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	if !strings.Contains(out, "640x360") || !strings.Contains(out, "H264") || !strings.Contains(out, "opus") {
		t.Errorf("status does not show the tracks' codecs and resolution:\n%s", out)
	}
	// The browser decoded what our own SRTP sender encrypted (sfu/rtc/egress.go), not pion's.
	if m := getText(t, d.URL+"/metrics"); !strings.Contains(m, `sluice_webrtc_viewer_routes_total{route="direct"} 1`) {
		t.Errorf("the browser's WHEP session did not use the direct route:\n%s", grepLines(m, "sluice_webrtc_viewer_routes"))
	}
}
