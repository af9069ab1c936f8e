package api

import (
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
)

// request serves one request built by the caller and returns the recorder.
func request(s *Server, method, path, remote, host string, hdr map[string]string, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	r.RemoteAddr, r.Host = remote, host
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, r)
	return w
}

// In open mode the API trusts loopback, so a foreign page in a browser on the same host must
// not reach it: cross-origin Origins, DNS-rebinding Host names and bodies without the JSON
// content type (a no-cors fetch or a form) are refused; preflights say no, except for the
// configured origins.
func TestOpenModeRefusesForeignPages(t *testing.T) {
	s, hub, _ := newServer(t, nil)
	s.opts.Gate.AllowOrigins("https://app.example.com")
	jsonCT := map[string]string{"Content-Type": "application/json"}
	body := `{"name":"r1"}`
	for _, tc := range []struct {
		name   string
		method string
		host   string
		hdr    map[string]string
		body   string
		want   int
	}{
		{"cross-origin page", "POST", "127.0.0.1:8800", map[string]string{"Content-Type": "application/json", "Origin": "https://evil.example"}, body, 403},
		{"no-cors post without content type", "POST", "127.0.0.1:8800", map[string]string{"Origin": "null"}, body, 403},
		{"text/plain body", "POST", "localhost:8800", map[string]string{"Content-Type": "text/plain"}, body, 415},
		{"body without content type", "POST", "localhost:8800", nil, body, 415},
		{"dns rebinding host", "POST", "rebind.evil.example:8800", jsonCT, body, 403},
		{"rebinding host, GET", "GET", "rebind.evil.example:8800", nil, "", 403},
		{"rebinding same-origin", "GET", "rebind.evil.example:8800", map[string]string{"Origin": "http://rebind.evil.example:8800"}, "", 403},
		{"preflight from a foreign origin", "OPTIONS", "127.0.0.1:8800", map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}, "", 403},
		{"same-origin page", "GET", "localhost:8800", map[string]string{"Origin": "http://localhost:8800"}, "", 200},
		{"allowed origin", "GET", "app.example.com", map[string]string{"Origin": "https://app.example.com"}, "", 200},
		{"curl", "GET", "[::1]:8800", nil, "", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := "/v1/rooms"
			w := request(s, tc.method, path, local, tc.host, tc.hdr, tc.body)
			if w.Code != tc.want {
				t.Fatalf("%s %s: %d %s, want %d", tc.method, path, w.Code, w.Body, tc.want)
			}
			if w.Code == 403 && w.Header().Get("Access-Control-Allow-Origin") != "" {
				t.Fatal("a refusal allows the origin to read it")
			}
		})
	}
	if len(hub.Rooms()) != 0 {
		t.Fatalf("a refused request created a room: %v", hub.Rooms())
	}
	w := request(s, "OPTIONS", "/v1/rooms", local, "127.0.0.1:8800", map[string]string{"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}, "")
	h := w.Header()
	if w.Code != 204 || h.Get("Access-Control-Allow-Origin") != "https://app.example.com" || !strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") ||
		!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Content-Type") {
		t.Fatalf("preflight from an allowed origin: %d %v", w.Code, h)
	}
	w = request(s, "POST", "/v1/rooms", local, "127.0.0.1:8800", map[string]string{"Origin": "https://app.example.com", "Content-Type": "application/json"}, body)
	if w.Code != 201 || w.Header().Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Fatalf("allowed origin: %d %v", w.Code, w.Header())
	}
}

// In key mode /metrics is an admin route; http.metrics_allow lets a scraper in by address.
func TestMetricsNeedAdminInKeyMode(t *testing.T) {
	keys := map[string]string{"k": secret}
	em := sfu.NewLocalEmitter(0, nil)
	hub, err := sfu.NewHub(sfu.Options{Config: sfu.DefaultConfig(), Emitter: em})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	reg := prometheus.NewRegistry()
	reg.MustRegister(hub)
	s := New(Options{Hub: hub, Gate: NewGate(auth.NewVerifier(auth.Config{Keys: keys}, nil), em), Registry: reg,
		MetricsAllow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	admin := mint(t, auth.Grants{Admin: true})
	room := mint(t, auth.Grants{Room: "r", Subscribe: true})
	for _, tc := range []struct {
		remote, token string
		want          int
	}{
		{remote, "", 401},
		{local, "", 401},
		{remote, room, 403},
		{remote, admin, 200},
		{"10.1.2.3:9999", "", 200},
	} {
		code, body := call(t, s, "GET", "/metrics", tc.remote, tc.token, "")
		if code != tc.want || (code == 200 && !strings.Contains(body, "sluice_rooms")) {
			t.Errorf("GET /metrics from %s (token %t): %d, want %d", tc.remote, tc.token != "", code, tc.want)
		}
	}
}

func mint(t *testing.T, g auth.Grants) string {
	t.Helper()
	tok, err := auth.Sign("k", secret, auth.Claims{ExpiresAt: time.Now().Add(time.Minute).Unix(), Grants: g})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
