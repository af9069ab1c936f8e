package recorder

import (
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/recorder/rectest"
	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/auth"
)

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url) //nolint:gosec,noctx // test URL
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// TestHLSPlayback plays a finished recording's HLS playlist, then the same recording once it is
// uploaded and its local files are gone, with ffmpeg: as many frames as the files hold (±1 %).
func TestHLSPlayback(t *testing.T) {
	s3 := rectest.StartS3(t, 0)
	t.Setenv("TEST_S3_AK", rectest.S3AccessKey)
	cfg := testConfig()
	e := newEnvStorage(t, cfg, nil, s3Storage(s3, rectest.S3SecretKey, false))
	video, audio := rectest.H264Opus(t, 10, 2)
	rec := e.record(t, "hls", 7*time.Second, Request{Segment: 3 * time.Second, Storage: "s3"}, video, audio)
	if len(rec.Files) < 2 {
		t.Fatalf("%d files", len(rec.Files))
	}
	want := 0
	for i := range rec.Files {
		want += rectest.VideoFrames(t, e.file(rec, i))
	}
	base := e.whipServer()
	url := base + "/v1/recordings/" + rec.ID + "/index.m3u8"
	resp, body := get(t, url)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "#EXT-X-ENDLIST") || strings.Count(string(body), "#EXT-X-MAP") != 1 {
		t.Fatalf("playlist %d:\n%s", resp.StatusCode, body)
	}
	check := func(what string) {
		t.Helper()
		got := rectest.VideoFrames(t, url)
		if math.Abs(float64(got-want)) > 0.01*float64(want) {
			t.Errorf("%s: HLS plays %d video frames, the files hold %d", what, got, want)
		}
		t.Logf("%s: %d of %d frames", what, got, want)
	}
	check("local")
	e.waitStatus(rec.ID, 30*time.Second, uploaded)
	if _, err := e.rec.Delete(rec.ID, ReasonRequested); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rec.Get(rec.ID); err != nil {
		t.Fatalf("an uploaded recording deleted locally left the catalogue: %v", err)
	}
	for i := range rec.Files {
		if _, err := os.Stat(e.file(rec, i)); !os.IsNotExist(err) {
			t.Fatalf("local file after delete: %v", err)
		}
	}
	check("uploaded")
	if e := rectest.DecodeErrors(t, url); e != "" {
		t.Errorf("decode errors: %s", e)
	}
	// The time-range endpoint reads the uploaded objects too.
	resp, body = get(t, base+"/v1/playback?room=hls&start="+rec.Files[0].StartedAt.Format(time.RFC3339Nano)+"&duration=1h")
	if resp.StatusCode != 200 {
		t.Fatalf("playback from storage: %d %s", resp.StatusCode, body)
	}
	out := filepath.Join(t.TempDir(), "window.mp4")
	writeFile(t, out, body)
	p := rectest.Verify(t, out, 0, "h264", "opus")
	if d, want := rectest.Seconds(p.Format.Duration), float64(rec.DurationMs)/1000; math.Abs(d-want) > 0.3 {
		t.Errorf("playback from storage plays %.3f s, the recording is %.3f s", d, want)
	}
}

// TestPlaybackTimeRange asks for a window over two recordings with a gap between them: one
// decodable fMP4 as long as the two recordings, with the gap stated.
func TestPlaybackTimeRange(t *testing.T) {
	e := newEnv(t, testConfig(), nil)
	video, audio := rectest.H264Opus(t, 6, 2)
	a := e.record(t, "range", 4*time.Second, Request{}, video, audio)
	time.Sleep(2 * time.Second)
	b := e.record(t, "range", 4*time.Second, Request{}, video, audio)
	base := e.whipServer()
	resp, body := get(t, base+"/v1/playback/list?room=range")
	if resp.StatusCode != 200 || strings.Count(string(body), `"recording"`) != 2 {
		t.Fatalf("list %d: %s", resp.StatusCode, body)
	}
	start := a.Files[0].StartedAt.Add(-2 * time.Second)
	end := b.Files[0].StartedAt.Add(time.Duration(b.Files[0].DurationMs)*time.Millisecond + 2*time.Second)
	u := base + "/v1/playback?room=range&start=" + start.Format(time.RFC3339Nano) + "&duration=" + end.Sub(start).String()
	resp, body = get(t, u)
	if resp.StatusCode != 200 {
		t.Fatalf("playback %d: %s", resp.StatusCode, body)
	}
	gaps := resp.Header.Get("X-Sluice-Gaps")
	if strings.Count(gaps, "/") != 3 || strings.Count(resp.Header.Get("X-Sluice-Spans"), "/") != 2 {
		t.Errorf("spans %q gaps %q", resp.Header.Get("X-Sluice-Spans"), gaps)
	}
	out := filepath.Join(t.TempDir(), "window.mp4")
	writeFile(t, out, body)
	p := rectest.Verify(t, out, 0, "h264", "opus")
	covered := float64(a.DurationMs+b.DurationMs) / 1000
	if d := rectest.Seconds(p.Format.Duration); math.Abs(d-covered) > 0.3 {
		t.Errorf("window plays %.3f s, the recordings cover %.3f s", d, covered)
	}
	// A window inside the first recording, cut at a keyframe.
	mid := a.Files[0].StartedAt.Add(time.Second)
	resp, body = get(t, base+"/v1/playback?room=range&start="+mid.Format(time.RFC3339Nano)+"&duration=2s")
	if resp.StatusCode != 200 {
		t.Fatalf("playback %d: %s", resp.StatusCode, body)
	}
	writeFile(t, out, body)
	p = rectest.Verify(t, out, 0, "h264", "opus")
	if d := rectest.Seconds(p.Format.Duration); d < 1.9 || d > 3.1 {
		t.Errorf("2 s window plays %.3f s (from the keyframe before its start)", d)
	}
	resp, _ = get(t, base+"/v1/playback?room=range&start="+end.Add(time.Hour).Format(time.RFC3339)+"&duration=1m")
	if resp.StatusCode != 404 {
		t.Errorf("empty window: %d", resp.StatusCode)
	}
}

func writeFile(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestPlaybackGrants: playback takes a subscribe grant for the recording's room, or admin; the
// playlist carries the token on to its segments.
func TestPlaybackGrants(t *testing.T) {
	e := newEnv(t, testConfig(), nil)
	video, audio := rectest.H264Opus(t, 4, 2)
	rec := e.record(t, "granted", 2*time.Second, Request{}, video, audio)
	const key, secret = "APIplayback", "a-secret-of-enough-length-for-hs256"
	gate := api.NewGate(auth.NewVerifier(auth.Config{Keys: map[string]string{key: secret}}, nil), e.hub.Emitter())
	a := api.New(api.Options{Hub: e.hub, Gate: gate})
	e.rec.Register(a, gate)
	hs := httptest.NewServer(a.Handler())
	defer hs.Close()
	token := func(g auth.Grants) string {
		tok, err := auth.Sign(key, secret, auth.Claims{ExpiresAt: time.Now().Add(time.Hour).Unix(), Grants: g})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	playlist := hs.URL + "/v1/recordings/" + rec.ID + "/index.m3u8"
	start := rec.Files[0].StartedAt.Format(time.RFC3339Nano)
	for _, tc := range []struct {
		name string
		tok  string
		want int
	}{
		{"none", "", http.StatusUnauthorized},
		{"subscribe", token(auth.Grants{Room: "granted", Subscribe: true}), 200},
		{"other room", token(auth.Grants{Room: "other", Subscribe: true}), http.StatusForbidden},
		{"publish only", token(auth.Grants{Room: "granted", Publish: true}), http.StatusForbidden},
		{"admin", token(auth.Grants{Admin: true}), 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := "?access_token=" + tc.tok
			for _, u := range []string{playlist + q, hs.URL + "/v1/playback/list" + q + "&room=granted",
				hs.URL + "/v1/playback" + q + "&room=granted&start=" + start + "&duration=1s"} {
				resp, body := get(t, u)
				refused := tc.want == http.StatusUnauthorized && resp.StatusCode == http.StatusForbidden // either says no
				if resp.StatusCode != tc.want && !refused {
					t.Errorf("%s: %d %s, want %d", u, resp.StatusCode, body, tc.want)
				}
			}
			if tc.want != 200 {
				return
			}
			_, body := get(t, playlist+q)
			for _, line := range strings.Split(string(body), "\n") {
				if strings.HasPrefix(line, "hls/") {
					resp, seg := get(t, hs.URL+"/v1/recordings/"+rec.ID+"/"+line)
					if resp.StatusCode != 200 || len(seg) == 0 {
						t.Fatalf("segment %s: %d", line, resp.StatusCode)
					}
					break
				}
			}
		})
	}
}
