package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// hlsConfig is the hls: section of the HLS tests: a short idle time to watch the muxer stop.
const hlsConfig = "hls: { part_duration: 200ms, segment_duration: 1s, idle_timeout: 3s }\n"

// ffmpeg reads the LL-HLS playlist of an RTMP room (H.264 High with B-frames, AAC) and decodes
// it: video and audio frames for the time read, no decode error. Once the reader is gone the
// muxer stops after its idle time, and its participant leaves with its play stream.
func TestHLSFromRTMPDecodes(t *testing.T) {
	d := startDaemon(t, hlsConfig)
	ffmpegOBS(t, fmt.Sprintf("rtmp://127.0.0.1:%d/live/hlsroom", d.RTMPPort), 60, 2)
	d.waitPublisher(t, "hlsroom", 2)

	bin := sfutest.RequireTool(t, "ffmpeg")
	const seconds = 6
	cmd := exec.Command(bin, "-hide_banner", "-v", "error", "-i", d.URL+"/hls/hlsroom/index.m3u8",
		"-t", fmt.Sprint(seconds), "-f", "framecrc", "-")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ffmpeg reading the playlist: %v\n%s", err, stderr.String())
	}
	video, audio := 0, 0
	for _, line := range strings.Split(stdout.String(), "\n") {
		switch {
		case strings.HasPrefix(line, "0,"):
			video++
		case strings.HasPrefix(line, "1,"):
			audio++
		}
	}
	t.Logf("decoded %d video and %d audio frames in %d s", video, audio, seconds)
	// 30 fps and 48 kHz AAC (1024 samples a frame): allow 10 % for the cut at -t
	if video < seconds*30*9/10 || audio < seconds*47*9/10 {
		t.Errorf("decoded %d video and %d audio frames; want about %d and %d", video, audio, seconds*30, seconds*47)
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		t.Errorf("ffmpeg reported errors:\n%s", tail(s, 20))
	}

	// the reader is gone: the muxer stops after idle_timeout (3 s)
	var left, stopped *sfu.Event
	deadline := time.Now().Add(15 * time.Second)
	for (left == nil || stopped == nil) && time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		for _, ev := range d.loggedEvents() {
			switch {
			case ev.Type == sfu.EventParticipantLeft && ev.Participant != nil && ev.Participant.Kind == sfu.ParticipantHLS:
				left = &ev
			case ev.Type == sfu.EventStreamStopped && ev.Stream != nil && ev.Stream.Protocol == sfu.ProtocolHLS:
				stopped = &ev
			}
		}
	}
	if left == nil || stopped == nil {
		t.Fatalf("the HLS muxer did not stop after its idle time (participant.left %v, stream.stopped %v)", left != nil, stopped != nil)
	}
	if left.Reason != sfu.ReasonClientDisconnected {
		t.Errorf("the muxer left with reason %q", left.Reason)
	}
	if !strings.Contains(d.logs.String(), "hls muxer idle: stopping") {
		t.Errorf("the daemon did not log the idle stop")
	}
	// a new request starts a new muxer
	out, err := exec.Command(bin, "-hide_banner", "-v", "error", "-i", d.URL+"/hls/hlsroom/index.m3u8", "-t", "1", "-f", "null", "-").CombinedOutput()
	if err != nil {
		t.Fatalf("reading again after the idle stop: %v\n%s", err, out)
	}
}

// hlsJSDist holds hls.js's builds, pinned in web/testdata/js (npm ci in .ci/run).
const hlsJSDist = "../../web/testdata/js/node_modules/hls.js/dist"

func requireHLSJS(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(hlsJSDist + "/hls.min.js"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("hls.js is not installed (cd web/testdata/js && npm ci): %v", err)
		}
		t.Skipf("hls.js is not installed (cd web/testdata/js && npm ci): %v", err)
	}
}

// ffmpegNumbered publishes a test pattern whose frame number is burned into its top 40 rows
// (16 boxes of 40x40, box k white when bit k is set), at fps in real time, keyframe every
// second, no B-frames, AAC; it returns the wall time before ffmpeg started: frame n leaves the
// generator no earlier than that plus n/fps.
func ffmpegNumbered(t *testing.T, url string, fps, seconds int) time.Time {
	t.Helper()
	filter := "drawbox=x=0:y=0:w=640:h=40:color=black:t=fill"
	for k := range 16 {
		filter += fmt.Sprintf(",drawbox=x=%d:y=0:w=40:h=40:color=white:t=fill:enable='eq(mod(floor(n/%d),2),1)'", k*40, 1<<k)
	}
	t0 := time.Now()
	startFFmpeg(t, "-re", "-f", "lavfi", "-i", fmt.Sprintf("testsrc2=size=640x360:rate=%d", fps),
		"-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", strconv.Itoa(seconds), "-vf", filter,
		"-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-bf", "0", "-g", strconv.Itoa(fps),
		"-pix_fmt", "yuv420p", "-b:v", "1M", "-c:a", "aac", "-ar", "48000", "-b:a", "96k", "-f", "flv", url)
	return t0
}

// In headless Chromium, hls.js (npm, pinned) plays the LL-HLS of an RTMP room in key mode (the
// token in the query); the glass-to-glass latency is read off the frame numbers the publisher
// burned into its frames, against the wall clock of the same machine.
func TestChromiumHLSJSLatency(t *testing.T) {
	requireChromium(t)
	requireHLSJS(t)
	const key, secret = "hlskey", "hls-test-secret-0123456789abcdef"
	d := startDaemon(t, hlsConfig+fmt.Sprintf("auth: { keys: { %s: %q } }\n", key, secret))
	pub := signToken(t, key, secret, auth.Grants{Room: "live", Publish: true})
	sub := signToken(t, key, secret, auth.Grants{Room: "live", Subscribe: true})
	const fps = 30
	t0 := ffmpegNumbered(t, fmt.Sprintf("rtmp://127.0.0.1:%d/live/%s", d.RTMPPort, pub), fps, 60)

	playlist := d.URL + "/hls/live/index.m3u8"
	// same auth as WHEP: no token, 401; the token in the query, or as a Bearer header, passes
	waitHTTP(t, playlist, "", http.StatusUnauthorized)
	waitHTTP(t, playlist+"?access_token="+sub, "", http.StatusOK)
	waitHTTP(t, playlist, sub, http.StatusOK)

	ps := newPageServer(t, func(mux *http.ServeMux) {
		mux.Handle("GET /lib/hls/", http.StripPrefix("/lib/hls/", http.FileServer(http.Dir(hlsJSDist))))
	})
	ps.openPage(t, "hls.html", "hls", url.Values{"src": {playlist + "?access_token=" + sub},
		"t0": {strconv.FormatInt(t0.UnixMilli(), 10)}, "fps": {strconv.Itoa(fps)}})
	first := ps.waitReport(t, "hls", "frames painted and read", 40*time.Second, func(r map[string]any) bool {
		return num(r, "samples") >= 90
	})
	time.Sleep(5 * time.Second) // steady state
	r := ps.report("hls")
	t.Logf("hls.js %v: %v painted, %v unreadable, glass-to-glass median %v ms, max %v ms over the last 3 s; hls.js latency %v s; %vx%v %v %v",
		r["version"], r["painted"], r["unreadable"], r["median"], r["max"], r["hlsLatency"], r["width"], r["height"], r["videoCodec"], r["audioCodec"])
	if num(r, "lastFrame") <= num(first, "lastFrame") {
		t.Fatalf("playback stalled at frame %v", r["lastFrame"])
	}
	if num(r, "unreadable") > num(r, "painted")/10 {
		t.Errorf("%v of %v painted frames did not carry a readable number", r["unreadable"], r["painted"])
	}
	if m := num(r, "median"); m <= 0 || m >= 3000 {
		t.Errorf("glass-to-glass latency %v ms (median of the last 3 s); want under 3 s", m)
	}
	if !strings.HasPrefix(fmt.Sprint(r["audioCodec"]), "mp4a") {
		t.Errorf("audio codec %v: AAC should pass through", r["audioCodec"])
	}
}

func signToken(t *testing.T, key, secret string, g auth.Grants) string {
	t.Helper()
	tok, err := auth.Sign(key, secret, auth.Claims{ExpiresAt: time.Now().Add(time.Hour).Unix(), Grants: g})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// waitHTTP waits until a GET of u (with a Bearer token when set) answers status.
func waitHTTP(t *testing.T, u, token string, status int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	client := &http.Client{Timeout: 15 * time.Second}
	for {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		got := 0
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			got = resp.StatusCode
		}
		if got == status {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %d (%v); want %d", strings.Split(u, "?")[0], got, err, status)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
