package livekit

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/auth"
)

type nopEmitter struct{}

func (nopEmitter) Emit(*sfu.Event) {}

const secret = "0123456789abcdef0123456789abcdef"

func lkToken(t *testing.T, key, sec, room, identity string, exp time.Time) string {
	t.Helper()
	yes := true
	c := auth.Claims{Identity: identity, ExpiresAt: exp.Unix()}
	if room != "" {
		c.Video = &auth.VideoGrant{RoomJoin: true, Room: room, CanPublish: &yes}
	}
	tok, err := auth.Sign(key, sec, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// /rtc/validate (what livekit-client asks when the WebSocket fails) and /rtc refuse bad
// tokens with a precise status before any upgrade.
func TestAdmission(t *testing.T) {
	later := time.Now().Add(time.Hour)
	keyed := auth.NewVerifier(auth.Config{Keys: map[string]string{"app": secret}}, nil)
	open := auth.NewVerifier(auth.Config{}, nil)
	cases := []struct {
		name     string
		verifier *auth.Verifier
		token    string
		status   int
		msg      string
	}{
		{"keyed: valid", keyed, lkToken(t, "app", secret, "lobby", "alice", later), 200, "success"},
		{"keyed: no token", keyed, "", 401, "token is required"},
		{"keyed: wrong secret", keyed, lkToken(t, "app", strings.Repeat("x", 32), "lobby", "alice", later), 401, ""},
		{"keyed: unknown key", keyed, lkToken(t, "other", secret, "lobby", "alice", later), 401, ""},
		{"keyed: expired", keyed, lkToken(t, "app", secret, "lobby", "alice", time.Now().Add(-time.Minute)), 401, "expired"},
		{"keyed: no video grant", keyed, lkToken(t, "app", secret, "", "alice", later), 401, "video grant"},
		{"keyed: no identity", keyed, lkToken(t, "app", secret, "lobby", "", later), 401, "identity"},
		{"open: any key", open, lkToken(t, "whatever", strings.Repeat("y", 32), "lobby", "alice", later), 200, "success"},
		{"open: still needs the room", open, lkToken(t, "whatever", secret, "", "alice", later), 401, "video grant"},
		{"open: not a JWT", open, "garbage", 401, ""},
		{"open: bad room name", open, lkToken(t, "k", secret, "bad room/..", "alice", later), 400, "room"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := NewServer(nil, nil, api.NewGate(c.verifier, nopEmitter{}), nil)
			mux := http.NewServeMux()
			srv.Register(mux)
			paths := []string{"/rtc/validate", "/rtc"}
			if c.status == 200 {
				paths = paths[:1] // /rtc would join: the browser test covers it
			}
			for _, path := range paths {
				req := httptest.NewRequest("GET", path+"?access_token="+c.token, nil)
				rec := httptest.NewRecorder()
				mux.ServeHTTP(rec, req)
				if rec.Code != c.status || !strings.Contains(rec.Body.String(), c.msg) {
					t.Errorf("%s: %d %q, want %d containing %q", path, rec.Code, rec.Body.String(), c.status, c.msg)
				}
				if rec.Header().Get("Access-Control-Allow-Origin") != "*" {
					t.Errorf("%s: the refusal is not readable cross-origin", path)
				}
			}
		})
	}
}
