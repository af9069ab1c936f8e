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
	pub := publish(t, clientAPI(t), h.http.URL+"/whip/cap", mint(t, auth.Grants{Room: "cap", Publish: true}))
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
		if status, _ := do(t, tc.method, h.http.URL+tc.path, ctype, "", strings.NewReader("a=end-of-candidates\r\n")); status != http.StatusNotFound {
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
