package rtc

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// A session's URL is its capability: it is never logged, and a WHIP session cannot be reached
// through a WHEP URL (or the reverse).
func TestSessionURLIsACapability(t *testing.T) {
	logs := &sfutest.Buffer{}
	h := newHarnessLogged(t, auth.Config{Keys: map[string]string{"app": testSecret}}, nil,
		Config{Port: 0, BindIP: "127.0.0.1"}, slog.New(slog.NewTextHandler(logs, nil)))
	defer h.close()
	token := mint(t, auth.Grants{Room: "cap", Publish: true})
	pub := publish(t, clientAPI(t), h.http.URL+"/whip/cap", token)
	defer pub.close()
	loc, err := url.Parse(pub.session.Resource)
	if err != nil {
		t.Fatal(err)
	}
	id := loc.Path[strings.LastIndexByte(loc.Path, '/')+1:]
	if !strings.HasPrefix(loc.Path, "/whip/session/") || len(id) < 16 {
		t.Fatalf("session URL %q", loc.Path)
	}
	for _, tc := range []struct{ method, path string }{
		{http.MethodDelete, "/whep/session/" + id},
		{http.MethodPatch, "/whep/session/" + id},
	} {
		ctype := ""
		if tc.method == http.MethodPatch {
			ctype = "application/trickle-ice-sdpfrag"
		}
		if status, _ := do(t, tc.method, h.http.URL+tc.path, ctype, token, strings.NewReader("a=end-of-candidates\r\n")); status != http.StatusNotFound {
			t.Fatalf("%s %s: %d, want 404", tc.method, tc.path, status)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if h.srv.Sessions() != 1 {
		t.Fatal("a WHEP URL ended the WHIP session")
	}
	if strings.Contains(logs.String(), id) {
		t.Fatalf("the session id (its capability) is in the log:\n%s", logs.String())
	}
	if err := pub.session.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	sfutest.WaitFor(t, "the session to end", 10*time.Second, func() bool { return h.srv.Sessions() == 0 })
}

// With keys, a session URL is not enough to change or end a session: the request's token must
// be valid and be the creator's (its identity, or the very token when it has none) or an
// admin's of the room.
func TestSessionNeedsItsCreatorsToken(t *testing.T) {
	h := newHarness(t, auth.Config{Keys: map[string]string{"app": testSecret}})
	defer h.close()
	as := func(sub string, g auth.Grants) string {
		t.Helper()
		tok, err := auth.Sign("app", testSecret, auth.Claims{Identity: sub, ExpiresAt: time.Now().Add(time.Hour).Unix(), Grants: g})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	pubGrant := auth.Grants{Room: "own", Publish: true, Subscribe: true}
	api := clientAPI(t)
	alice := publish(t, api, h.http.URL+"/whip/own", as("alice", pubGrant))
	defer alice.close()
	anonToken := as("", pubGrant)
	anon := publish(t, api, h.http.URL+"/whip/own", anonToken)
	defer anon.close()
	expired, err := auth.Sign("app", testSecret, auth.Claims{Identity: "alice", ExpiresAt: time.Now().Add(-time.Minute).Unix(), Grants: pubGrant})
	if err != nil {
		t.Fatal(err)
	}
	path := func(s *Session) string {
		loc, err := url.Parse(s.Resource)
		if err != nil {
			t.Fatal(err)
		}
		return h.http.URL + loc.Path
	}
	refused := []struct {
		name, method, token string
		of                  *testPublisher
		status              int
	}{
		{"no token", http.MethodDelete, "", alice, http.StatusUnauthorized},
		{"no token", http.MethodPatch, "", alice, http.StatusUnauthorized},
		{"an expired token of the same identity", http.MethodDelete, expired, alice, http.StatusUnauthorized},
		{"another identity with the same grants", http.MethodDelete, as("mallory", pubGrant), alice, http.StatusForbidden},
		{"another identity with the same grants", http.MethodPatch, as("mallory", pubGrant), alice, http.StatusForbidden},
		{"an admin of another room", http.MethodDelete, as("ops", auth.Grants{Room: "other", Admin: true}), alice, http.StatusForbidden},
		{"another token without identity", http.MethodDelete, as("", auth.Grants{Room: "own", Publish: true}), anon, http.StatusForbidden},
		{"an identity, for a session made without one", http.MethodDelete, as("alice", pubGrant), anon, http.StatusForbidden},
	}
	for _, tc := range refused {
		status, e := do(t, tc.method, path(tc.of.session), "application/trickle-ice-sdpfrag", tc.token, strings.NewReader("a=end-of-candidates\r\n"))
		if status != tc.status {
			t.Errorf("%s %s: %d %q, want %d", tc.method, tc.name, status, e.Error.Message, tc.status)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if n := h.srv.Sessions(); n != 2 {
		t.Fatalf("%d sessions after refused requests, want 2", n)
	}
	// The creator's identity in a fresh token may trickle and end its session; so may an admin.
	if status, e := do(t, http.MethodPatch, path(alice.session), "application/trickle-ice-sdpfrag", as("alice", pubGrant), strings.NewReader("a=end-of-candidates\r\n")); status != http.StatusNoContent {
		t.Fatalf("PATCH by the creator's identity: %d %q", status, e.Error.Message)
	}
	if status, e := do(t, http.MethodDelete, path(alice.session), "", as("alice", auth.Grants{Room: "own", Subscribe: true}), nil); status != http.StatusOK {
		t.Fatalf("DELETE by the creator's identity: %d %q", status, e.Error.Message)
	}
	sfutest.WaitFor(t, "alice's session to end", 10*time.Second, func() bool { return h.srv.Sessions() == 1 })
	if status, e := do(t, http.MethodDelete, path(anon.session), "", as("ops", auth.Grants{Room: "own", Admin: true}), nil); status != http.StatusOK {
		t.Fatalf("DELETE by an admin of the room: %d %q", status, e.Error.Message)
	}
	sfutest.WaitFor(t, "every session to end", 10*time.Second, func() bool { return h.srv.Sessions() == 0 })
}
