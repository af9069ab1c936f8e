package api

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
)

const secret = "0123456789abcdef0123456789abcdef"

func newServer(t *testing.T, keys map[string]string) (*Server, *sfu.Hub, *sfu.LocalEmitter) {
	t.Helper()
	em := sfu.NewLocalEmitter(0, nil)
	hub, err := sfu.NewHub(sfu.Options{Config: sfu.DefaultConfig(), Emitter: em})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	reg := prometheus.NewRegistry()
	reg.MustRegister(hub)
	s := New(Options{Hub: hub, Gate: NewGate(auth.NewVerifier(auth.Config{Keys: keys}, nil), em), Registry: reg, Version: "test", Node: "n1"})
	return s, hub, em
}

// call serves one request from remote (host:port) and returns the status and body.
func call(t *testing.T, s *Server, method, path, remote, token, body string) (int, string) {
	t.Helper()
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	r.RemoteAddr = remote
	r.Host = "127.0.0.1:8800"
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, r)
	out, _ := io.ReadAll(w.Result().Body)
	return w.Code, string(out)
}

const local, remote = "127.0.0.1:5000", "203.0.113.9:5000"

func TestOpenModeAnswersLoopbackOnly(t *testing.T) {
	s, _, em := newServer(t, nil)
	if code, _ := call(t, s, "GET", "/v1/rooms", local, "", ""); code != 200 {
		t.Fatalf("loopback: %d", code)
	}
	code, body := call(t, s, "GET", "/v1/rooms", remote, "", "")
	if code != 403 || !strings.Contains(body, "loopback") {
		t.Fatalf("remote in open mode: %d %s", code, body)
	}
	evs := em.Events(0)
	if last := evs[len(evs)-1]; last.Type != sfu.EventAuthFailed || last.RemoteAddr != remote || last.Protocol != "http" {
		t.Fatalf("auth.failed not reported: %+v", last)
	}
	if code, body := call(t, s, "POST", "/v1/tokens", local, "", `{"room":"r","publish":true}`); code != 409 || !strings.Contains(body, "open mode") {
		t.Fatalf("tokens in open mode: %d %s", code, body)
	}
}

func TestRoomsAPI(t *testing.T) {
	s, hub, em := newServer(t, nil)
	code, body := call(t, s, "POST", "/v1/rooms", local, "", `{"name":"stage","empty_timeout":"10m","metadata":"m"}`)
	if code != 201 || !strings.Contains(body, `"name": "stage"`) {
		t.Fatalf("create: %d %s", code, body)
	}
	if code, _ := call(t, s, "POST", "/v1/rooms", local, "", `{"name":"stage"}`); code != 200 {
		t.Fatalf("create again: %d", code)
	}
	for _, bad := range []string{`{"name":"a b"}`, `{"name":"x","empty_timeout":"soon"}`, `{}`, `{"name":5}`} {
		if code, _ := call(t, s, "POST", "/v1/rooms", local, "", bad); code != 400 {
			t.Fatalf("%s: %d", bad, code)
		}
	}
	p, _ := hub.Join("stage", sfu.ParticipantSpec{Identity: "alice", Kind: sfu.ParticipantWHIP})
	if _, err := p.Publish(sfu.TrackSpec{Codec: sfu.Codec{Name: sfu.CodecOpus, ClockRate: 48000}}); err != nil {
		t.Fatal(err)
	}
	code, body = call(t, s, "GET", "/v1/rooms/stage", local, "", "")
	var st sfu.RoomStatus
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil || len(st.Participants) != 1 || len(st.Participants[0].Tracks) != 1 {
		t.Fatalf("show: %d %s", code, body)
	}
	code, body = call(t, s, "GET", "/v1/status", local, "", "")
	var status Status
	if code != 200 || json.Unmarshal([]byte(body), &status) != nil || status.Node != "n1" || len(status.Rooms) != 1 || !status.OpenMode {
		t.Fatalf("status: %d %s", code, body)
	}
	if code, _ := call(t, s, "DELETE", "/v1/rooms/stage/participants/bob", local, "", ""); code != 404 {
		t.Fatalf("kick unknown: %d", code)
	}
	if code, _ := call(t, s, "DELETE", "/v1/rooms/stage/participants/alice", local, "", ""); code != 204 {
		t.Fatalf("kick: %d", code)
	}
	if p.LeaveReason() != sfu.ReasonRemoved {
		t.Fatalf("kicked with reason %q", p.LeaveReason())
	}
	if code, _ := call(t, s, "DELETE", "/v1/rooms/stage", local, "", ""); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	if code, _ := call(t, s, "GET", "/v1/rooms/stage", local, "", ""); code != 404 {
		t.Fatalf("after delete: %d", code)
	}
	var last sfu.Event
	for _, e := range em.Events(0) {
		last = e
	}
	if last.Type != sfu.EventRoomFinished || last.Reason != sfu.ReasonDeleted {
		t.Fatalf("last event %s %s", last.Type, last.Reason)
	}
}

func TestTokensAndKeyMode(t *testing.T) {
	s, _, _ := newServer(t, map[string]string{"app": secret})
	admin, _ := auth.Sign("app", secret, auth.Claims{ExpiresAt: time.Now().Add(time.Minute).Unix(), Grants: auth.Grants{Admin: true}})
	if code, _ := call(t, s, "GET", "/v1/rooms", remote, admin, ""); code != 200 {
		t.Fatalf("admin token from a remote address: %d", code)
	}
	if code, _ := call(t, s, "GET", "/v1/rooms", local, "", ""); code != 401 {
		t.Fatalf("no token on loopback in key mode: %d", code)
	}
	code, body := call(t, s, "POST", "/v1/tokens", remote, admin, `{"room":"r","identity":"alice","publish":true,"ttl":"2h"}`)
	var tr TokenResponse
	if code != 201 || json.Unmarshal([]byte(body), &tr) != nil {
		t.Fatalf("mint: %d %s", code, body)
	}
	claims, err := auth.NewVerifier(auth.Config{Keys: map[string]string{"app": secret}}, nil).Verify(tr.Token)
	if err != nil || claims.Identity != "alice" || !claims.Allows(auth.ActionPublish, "r") || claims.Allows(auth.ActionSubscribe, "r") {
		t.Fatalf("minted token: %+v %v", claims, err)
	}
	if d := time.Until(tr.ExpiresAt); d < 119*time.Minute || d > 121*time.Minute {
		t.Fatalf("ttl: expires in %v", d)
	}
	for _, bad := range []string{`{"room":"r"}`, `{"publish":true}`, `{"room":"r","publish":true,"ttl":"9999h"}`, `{"room":"a/b","publish":true}`} {
		if code, _ := call(t, s, "POST", "/v1/tokens", remote, admin, bad); code != 400 {
			t.Fatalf("%s: %d", bad, code)
		}
	}
	// A publish token is not an admin token.
	if code, _ := call(t, s, "POST", "/v1/tokens", remote, tr.Token, `{"admin":true}`); code != 403 {
		t.Fatalf("escalation: %d", code)
	}
}

func TestHealthReadyMetrics(t *testing.T) {
	s, hub, _ := newServer(t, nil)
	if code, _ := call(t, s, "GET", "/healthz", remote, "", ""); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	if code, _ := call(t, s, "GET", "/readyz", remote, "", ""); code != 503 {
		t.Fatalf("readyz before ready %d", code)
	}
	s.SetReady(true)
	if code, _ := call(t, s, "GET", "/readyz", remote, "", ""); code != 200 {
		t.Fatalf("readyz %d", code)
	}
	p, _ := hub.Join("m", sfu.ParticipantSpec{Identity: "cam"})
	tr, _ := p.Publish(sfu.TrackSpec{Codec: sfu.Codec{Name: sfu.CodecH264, ClockRate: 90000}, CacheGOP: true})
	got := make(chan struct{}, 100)
	sub, _ := tr.Subscribe(sfu.SinkFunc(func(*sfu.Packet, bool) error { got <- struct{}{}; return nil }), sfu.SubscribeOptions{})
	defer sub.Close()
	for i := range 5 {
		tr.WritePacket(&sfu.Packet{Payload: make([]byte, 100), Keyframe: i == 0})
	}
	for range 5 {
		<-got
	}
	code, body := call(t, s, "GET", "/metrics", local, "", "")
	for _, want := range []string{"sluice_rooms 1", "sluice_participants 1", `sluice_tracks{kind="video"} 1`, "sluice_packets_in_total 5",
		"sluice_bytes_in_total 560", "sluice_packets_out_total 5", "sluice_subscriptions 1", "sluice_packets_dropped_total 0"} {
		if code != 200 || !strings.Contains(body, want) {
			t.Fatalf("metrics lack %q:\n%s", want, body)
		}
	}
	if code, body := call(t, s, "GET", "/v1/nope", local, "", ""); code != 404 || !strings.Contains(body, `"code": "not_found"`) {
		t.Fatalf("unknown route: %d %s", code, body)
	}
	if code, _ := call(t, s, "POST", "/healthz", local, "", ""); code != http.StatusMethodNotAllowed {
		t.Fatalf("wrong method: %d", code)
	}
}

func FuzzDecodeJSON(f *testing.F) {
	f.Add(`{"name":"x","empty_timeout":"5m"}`)
	f.Add(`{"name":`)
	f.Fuzz(func(t *testing.T, body string) {
		r := httptest.NewRequest("POST", "/", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		var req CreateRoomRequest
		if err := DecodeJSON(w, r, &req); err != nil {
			if !errors.As(err, new(*Error)) {
				t.Fatalf("not an API error: %v", err)
			}
		}
	})
}

// PATCH of a room and a participant and the mute call each emit exactly one event of their
// type, carrying the new values; unchanged values and unknown objects emit nothing.
func TestUpdateAndMuteAPI(t *testing.T) {
	s, hub, em := newServer(t, nil)
	p, err := hub.Join("stage", sfu.ParticipantSpec{Identity: "obs", Kind: sfu.ParticipantRTMP})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := p.Publish(sfu.TrackSpec{Codec: sfu.Codec{Name: sfu.CodecH264, ClockRate: 90000}})
	if err != nil {
		t.Fatal(err)
	}
	since := em.Events(0)[len(em.Events(0))-1].Seq
	mute := "/v1/rooms/stage/participants/obs/tracks/" + tr.SID() + "/mute"
	for _, c := range []struct {
		method, path, body string
		code               int
		event              string
	}{
		{"PATCH", "/v1/rooms/stage", `{"metadata":"{\"topic\":\"q\"}"}`, 200, sfu.EventRoomUpdated},
		{"PATCH", "/v1/rooms/stage", `{"metadata":"{\"topic\":\"q\"}"}`, 200, ""},
		{"PATCH", "/v1/rooms/nowhere", `{"metadata":"x"}`, 404, ""},
		{"PATCH", "/v1/rooms/stage", `{"metadata":"` + strings.Repeat("x", MaxMetadataBytes+1) + `"}`, 400, ""},
		{"PATCH", "/v1/rooms/stage/participants/obs", `{"name":"OBS","metadata":"m"}`, 200, sfu.EventParticipantUpdated},
		{"PATCH", "/v1/rooms/stage/participants/obs", `{"metadata":"m"}`, 200, ""},
		{"PATCH", "/v1/rooms/stage/participants/ghost", `{"name":"x"}`, 404, ""},
		{"POST", mute, `{"muted":true}`, 200, sfu.EventTrackMuted},
		{"POST", mute, `{"muted":true}`, 200, ""},
		{"POST", mute, `{}`, 400, ""},
		{"POST", mute, `{"muted":false}`, 200, sfu.EventTrackUnmuted},
		{"POST", "/v1/rooms/stage/participants/obs/tracks/TR_none/mute", `{"muted":true}`, 404, ""},
	} {
		code, body := call(t, s, c.method, c.path, local, "", c.body)
		if code != c.code {
			t.Fatalf("%s %s %.40s: %d %s", c.method, c.path, c.body, code, body)
		}
		evs := em.Events(since)
		switch {
		case c.event == "" && len(evs) != 0:
			t.Fatalf("%s %s %.40s: unexpected %s", c.method, c.path, c.body, evs[0].Type)
		case c.event != "" && (len(evs) != 1 || evs[0].Type != c.event):
			t.Fatalf("%s %s %.40s: events %+v, want one %s", c.method, c.path, c.body, evs, c.event)
		}
		if len(evs) > 0 {
			since = evs[len(evs)-1].Seq
			ev := evs[0]
			switch ev.Type {
			case sfu.EventRoomUpdated:
				if ev.Room.Metadata != `{"topic":"q"}` {
					t.Fatalf("room.updated metadata %q", ev.Room.Metadata)
				}
			case sfu.EventParticipantUpdated:
				if ev.Participant.Name != "OBS" || ev.Participant.Metadata != "m" {
					t.Fatalf("participant.updated %+v", ev.Participant)
				}
			case sfu.EventTrackMuted, sfu.EventTrackUnmuted:
				if ev.Track.SID != tr.SID() || ev.Track.Muted != (ev.Type == sfu.EventTrackMuted) {
					t.Fatalf("%s track %+v", ev.Type, ev.Track)
				}
			}
		}
	}
}
