package transcode

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu/sfutest"
)

// chromiumFlags is the command line of shared/CHROMIUM.md: headless, no traffic beyond
// loopback, ICE on loopback only.
var chromiumFlags = []string{
	"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
	"--disable-background-networking", "--disable-component-update", "--disable-sync",
	"--disable-default-apps", "--disable-extensions", "--disable-breakpad", "--disable-field-trial-config",
	"--metrics-recording-only", "--no-default-browser-check", "--password-store=basic", "--use-mock-keychain",
	"--disable-background-timer-throttling", "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows",
	"--disable-features=WebRtcHideLocalIpsWithMdns,NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,PreconnectToSearch,HttpsUpgrades,LensOverlay",
	"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.*, EXCLUDE ::1, EXCLUDE [::1]",
	"--autoplay-policy=no-user-gesture-required",
	"--webrtc-ip-handling-policy=default_public_interface_only",
	"--remote-debugging-port=0",
}

// sineADTS makes seconds of a continuous 440 Hz tone as AAC (ADTS) at rate Hz.
func sineADTS(t testing.TB, rate, seconds int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sine.aac")
	runFFmpeg(t, "-f", "lavfi", "-i", fmt.Sprintf("sine=frequency=440:sample_rate=%d:duration=%d", rate, seconds),
		"-ac", "2", "-c:a", "aac", "-b:a", "128k", "-f", "adts", path)
	return path
}

// An AAC stream, as OBS sends it, played by headless Chromium over WHEP: Chromium negotiates
// Opus and decodes audio (samples received, a non-zero level), through the transcoder.
func TestChromiumHearsAAC(t *testing.T) {
	bin := sfutest.RequireTool(t, "chromium")
	if os.Getenv("SLUICE_SKIP_BROWSER") != "" && os.Getenv("CI") != "true" {
		t.Skip("SLUICE_SKIP_BROWSER is set")
	}
	d := startDaemon(t, newManager(t, nil, nil))
	startAACSource(t, d.hub, "studio", "obs", sineADTS(t, 44100, 10))

	var mu sync.Mutex
	var last map[string]any
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServer(http.Dir("testdata")))
	mux.HandleFunc("POST /report", func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		if b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20)); err == nil && json.Unmarshal(b, &m) == nil {
			mu.Lock()
			last = m
			mu.Unlock()
		}
		w.WriteHeader(http.StatusNoContent)
	})
	pages := httptest.NewServer(mux)
	defer pages.Close()

	page := pages.URL + "/listen.html?" + url.Values{"whep": {d.http.URL + "/whep/studio/obs"}}.Encode()
	cmd := exec.Command(bin, append(append([]string{}, chromiumFlags...), "--user-data-dir="+t.TempDir(), page)...)
	var logs logBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its helpers die with it
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("chromium log:\n%s", logs.String())
		}
	}()
	report := func() map[string]any {
		mu.Lock()
		defer mu.Unlock()
		return last
	}
	num := func(m map[string]any, k string) float64 { f, _ := m[k].(float64); return f }
	var first map[string]any
	sfutest.WaitFor(t, "Chromium decoding audio", 45*time.Second, func() bool {
		r := report()
		if e, ok := r["error"]; ok {
			t.Fatalf("page: %v", e)
		}
		if num(r, "totalSamplesReceived") > 48000 && num(r, "audioLevel") > 0 {
			first = r
			return true
		}
		return false
	})
	if first["codec"] != "audio/opus" {
		t.Fatalf("Chromium decodes %v", first["codec"])
	}
	sfutest.WaitFor(t, "more audio", 10*time.Second, func() bool {
		r := report()
		return num(r, "totalSamplesReceived") > num(first, "totalSamplesReceived")+48000 && num(r, "totalAudioEnergy") > num(first, "totalAudioEnergy")
	})
	t.Logf("Chromium: %v", report())
}
