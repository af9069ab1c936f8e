package web

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// The embedded hls.js is byte for byte the dist/hls.min.js of the version testdata/js's lock
// file pins (installed by `npm ci` there, as .ci/run does).
func TestVendoredHLSJS(t *testing.T) {
	want, err := os.ReadFile("testdata/js/node_modules/hls.js/dist/hls.min.js")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("hls.js is not installed (cd web/testdata/js && npm ci): %v", err)
		}
		t.Skipf("hls.js is not installed (cd web/testdata/js && npm ci): %v", err)
	}
	got, err := static.ReadFile("static/vendor/hls.min.js")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("static/vendor/hls.min.js differs from the pinned npm package's dist/hls.min.js: copy it again")
	}
	if _, err := static.ReadFile("static/vendor/hls.js.LICENSE"); err != nil {
		t.Fatal("hls.js is Apache-2.0: its license must ship beside it")
	}
}

func TestPages(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	for _, tc := range []struct {
		path, status, ctype, contains string
	}{
		{"/", "200", "text/html", "index.js"},
		{"/r/lobby", "200", "text/html", "player.js"},
		{"/r/lobby/publish", "200", "text/html", "publish.js"},
		{"/static/player.js", "200", "text/javascript", "playWHEP"},
		{"/static/vendor/hls.min.js", "200", "text/javascript", "Hls"},
		{"/static/nope.js", "404", "", ""},
		{"/r/lobby/other", "404", "", ""},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := http.Get(srv.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if got := resp.Status[:3]; got != tc.status {
				t.Fatalf("status %s, want %s", resp.Status, tc.status)
			}
			if tc.status != "200" {
				return
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.ctype) {
				t.Errorf("content type %q, want %s", ct, tc.ctype)
			}
			if !strings.Contains(string(body), tc.contains) {
				t.Errorf("body does not contain %q", tc.contains)
			}
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
				t.Errorf("CSP %q", csp)
			}
		})
	}
}
