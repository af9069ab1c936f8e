// Package egresstest runs a real RTMP platform for tests: nginx with the RTMP module as the
// test's own process (not the system service) on a loopback port, recording what it receives,
// and ffprobe to check the recordings. It is imported only by tests. Without nginx the tests
// that need it are skipped, except under CI=true where they fail (.ci/run installs it).
package egresstest

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu/sfutest"
)

// NginxModule is where Debian's libnginx-mod-rtmp installs the module.
const NginxModule = "/usr/lib/nginx/modules/ngx_rtmp_module.so"

// PlatformOptions configure a platform.
type PlatformOptions struct {
	// App is the RTMP application (default "live").
	App string
	// OnPublish is an HTTP URL nginx asks before accepting a publish (nginx-rtmp on_publish):
	// a 2xx accepts it, anything else refuses the stream key.
	OnPublish string
}

// Platform is an RTMP ingest on 127.0.0.1 that records every publish into its own file.
// Start, Kill and Restart are called from the test goroutine.
type Platform struct {
	t      testing.TB
	opts   PlatformOptions
	Port   int
	Dir    string
	RecDir string
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	log    *sfutest.Buffer
}

// StartPlatform starts a platform on a free loopback port. It stops with the test.
func StartPlatform(t testing.TB, opts PlatformOptions) *Platform {
	t.Helper()
	if opts.App == "" {
		opts.App = "live"
	}
	p := &Platform{t: t, opts: opts, Dir: t.TempDir(), log: &sfutest.Buffer{}}
	p.RecDir = filepath.Join(p.Dir, "rec")
	if err := os.MkdirAll(p.RecDir, 0o750); err != nil {
		t.Fatal(err)
	}
	RequireNginx(t)
	p.Port = sfutest.FreeTCPPort(t)
	p.start()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("platform log:\n%s", tail(p.log.String(), 40))
		}
	})
	return p
}

// RequireNginx skips the test when nginx or its RTMP module is missing (fails under CI=true).
func RequireNginx(t testing.TB) {
	t.Helper()
	sfutest.RequireTool(t, "nginx")
	if _, err := os.Stat(NginxModule); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required under CI=true (.ci/run installs libnginx-mod-rtmp)", NginxModule)
		}
		t.Skipf("%s is not installed (Debian: libnginx-mod-rtmp)", NginxModule)
	}
}

// URL returns the publish URL of a stream key on this platform.
func (p *Platform) URL(key string) string {
	return fmt.Sprintf("rtmp://127.0.0.1:%d/%s/%s", p.Port, p.opts.App, key)
}

func (p *Platform) start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	conf := filepath.Join(p.Dir, "nginx.conf")
	onPublish := ""
	if p.opts.OnPublish != "" {
		onPublish = "on_publish " + p.opts.OnPublish + ";"
	}
	cfg := fmt.Sprintf(`load_module %s;
daemon off;
master_process off;
worker_processes 1;
pid %s;
error_log stderr info;
events { worker_connections 64; }
rtmp {
  server {
    listen 127.0.0.1:%d;
    chunk_size 4096;
    application %s {
      live on;
      record all;
      record_path %s;
      record_unique on;
      %s
    }
  }
}
`, NginxModule, filepath.Join(p.Dir, "nginx.pid"), p.Port, p.opts.App, p.RecDir, onPublish)
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		p.t.Fatal(err)
	}
	cmd := exec.Command("nginx", "-c", conf, "-p", p.Dir, "-e", "stderr") //nolint:gosec // the test's own config in its temp dir
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	p.cmd, p.exited = cmd, exited
	deadline := time.Now().Add(10 * time.Second)
	for { // ready when the port accepts connections
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p.Port), time.Second)
		if err == nil {
			_ = c.Close()
			return
		}
		select {
		case <-exited:
			p.t.Fatalf("nginx exited at start:\n%s", p.log.String())
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("nginx does not listen after 10 s:\n%s", p.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *Platform) stop() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT) // in case it was paused
	_ = cmd.Process.Signal(os.Interrupt)    // nginx: fast shutdown, closes its recordings
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// Kill ends the platform with SIGKILL, as a crash or a network cut would.
func (p *Platform) Kill() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// Restart starts the platform again on the same port.
func (p *Platform) Restart() {
	p.Kill()
	p.start()
}

// Stop shuts the platform down cleanly, so that its recordings are complete.
func (p *Platform) Stop() { p.stop() }

// Log returns what the platform printed.
func (p *Platform) Log() string { return p.log.String() }

// Recordings returns the recorded files, oldest first.
func (p *Platform) Recordings() []string {
	entries, err := os.ReadDir(p.RecDir)
	if err != nil {
		p.t.Fatal(err)
	}
	type file struct {
		path string
		mod  time.Time
	}
	var files []file
	for _, e := range entries {
		if info, err := e.Info(); err == nil && !e.IsDir() && info.Size() > 0 {
			files = append(files, file{filepath.Join(p.RecDir, e.Name()), info.ModTime()})
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].path < files[j].path })
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = f.path
	}
	return out
}

// RecordedBytes returns the total size of the recordings.
func (p *Platform) RecordedBytes() int64 {
	var n int64
	for _, f := range p.Recordings() {
		if info, err := os.Stat(f); err == nil {
			n += info.Size()
		}
	}
	return n
}

// Probe is what ffprobe reads from a file.
type Probe struct {
	Video, Audio string  // codec names ("h264", "aac")
	Duration     float64 // seconds
	SampleRate   int
	Width        int
	Height       int
}

// ProbeFile runs ffprobe on a file and decodes it fully with ffmpeg; decoding errors fail the
// test.
func ProbeFile(t testing.TB, path string) Probe {
	t.Helper()
	ffprobe := sfutest.RequireTool(t, "ffprobe")
	out, err := exec.Command(ffprobe, "-v", "error", "-show_entries", //nolint:gosec // a test tool on a file the test made
		"stream=codec_type,codec_name,sample_rate,width,height:format=duration", "-of", "json", path).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		t.Fatalf("ffprobe %s: %v", filepath.Base(path), err)
	}
	var res struct {
		Streams []struct {
			CodecType  string `json:"codec_type"`
			CodecName  string `json:"codec_name"`
			SampleRate string `json:"sample_rate"`
			Width      int    `json:"width"`
			Height     int    `json:"height"`
		} `json:"streams"`
		Format struct {
			Duration string `json:"duration"`
		} `json:"format"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("ffprobe output: %v: %s", err, out)
	}
	var p Probe
	for _, s := range res.Streams {
		switch s.CodecType {
		case "video":
			p.Video, p.Width, p.Height = s.CodecName, s.Width, s.Height
		case "audio":
			p.Audio = s.CodecName
			p.SampleRate, _ = strconv.Atoi(s.SampleRate)
		}
	}
	p.Duration, _ = strconv.ParseFloat(res.Format.Duration, 64)
	if d := mediaSpan(t, ffprobe, path); d > 0 {
		// An FLV written live has no duration in its header: ffprobe then estimates one from
		// the bit rate. The span of the packets' timestamps is what was broadcast.
		p.Duration = d
	}
	ffmpeg := sfutest.RequireTool(t, "ffmpeg")
	dec := exec.Command(ffmpeg, "-v", "error", "-i", path, "-f", "null", "-") //nolint:gosec // a test tool on a file the test made
	msg, err := dec.CombinedOutput()
	if err != nil {
		t.Fatalf("decoding %s: %v\n%s", filepath.Base(path), err, msg)
	}
	if s := strings.TrimSpace(string(msg)); s != "" {
		t.Errorf("decoding %s reported errors:\n%s", filepath.Base(path), tail(s, 10))
	}
	return p
}

// mediaSpan returns the time from the first packet's timestamp to the end of the last one.
func mediaSpan(t testing.TB, ffprobe, path string) float64 {
	t.Helper()
	out, err := exec.Command(ffprobe, "-v", "error", "-show_entries", "packet=pts_time,duration_time", //nolint:gosec // a test tool on a file the test made
		"-of", "csv=p=0", path).Output()
	if err != nil {
		return 0
	}
	first, end := math.Inf(1), math.Inf(-1)
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pts, dur, _ := strings.Cut(line, ",")
		v, err := strconv.ParseFloat(pts, 64)
		if err != nil {
			continue
		}
		d, _ := strconv.ParseFloat(strings.TrimSuffix(dur, ","), 64)
		first, end = math.Min(first, v), math.Max(end, v+d)
	}
	if end < first {
		return 0
	}
	return end - first
}

func tail(s string, lines int) string {
	all := strings.Split(s, "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// Pause stops the platform's process (SIGSTOP): connections stay open but nothing is read, as
// with a stalled platform or network. Resume continues it.
func (p *Platform) Pause() error { return p.signal(syscall.SIGSTOP) }

// Resume continues a paused platform (SIGCONT).
func (p *Platform) Resume() error { return p.signal(syscall.SIGCONT) }

func (p *Platform) signal(sig os.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return fmt.Errorf("the platform is not running")
	}
	return p.cmd.Process.Signal(sig)
}
