package rtc

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// Sessions that never complete ICE are capped (globally, per address, per token) and end long
// before pion's own 30 s failure; neither they nor a normal session write warnings.
func TestPendingSessionsCappedAndTimedOut(t *testing.T) {
	logs := &sfutest.Buffer{}
	cfg := Config{Port: 0, BindIP: "127.0.0.1", MaxPending: 6, MaxPendingPerIP: 4, MaxPendingPerToken: 2, PendingTimeout: 2 * time.Second}
	h := newHarnessLogged(t, auth.Config{Keys: map[string]string{"app": testSecret}}, nil, cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer h.close()
	publisher := func(name string) string {
		tok, err := auth.Sign("app", testSecret, auth.Claims{Name: name, ExpiresAt: time.Now().Add(time.Hour).Unix(), Grants: auth.Grants{Room: "flood", Publish: true}})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tokA, tokB := publisher("a"), publisher("b")
	// an offer without candidates whose sender never runs ICE: what a flood from a script sends
	offer := offerSDP(t, func(m *webrtc.MediaEngine) error { return m.RegisterDefaultCodecs() }, webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio)
	postOffer := func(t *testing.T, url, token, sdp string) (int, string) {
		code, e := do(t, http.MethodPost, url, "application/sdp", token, strings.NewReader(sdp))
		return code, e.Error.Code + ": " + e.Error.Message
	}
	url := h.http.URL + "/whip/flood"

	codes := []int{}
	for _, tok := range []string{tokA, tokA, tokA, tokB, tokB} {
		code, _ := postOffer(t, url, tok, offer)
		codes = append(codes, code)
	}
	// per token: the third with tokA is refused; per address: the fifth (4 pending) is refused
	want := []int{201, 201, 503, 201, 201}
	for i := range want {
		if codes[i] != want[i] {
			t.Fatalf("offers answered %v, want %v", codes, want)
		}
	}
	tokC := publisher("c")
	if code, body := postOffer(t, url, tokC, offer); code != http.StatusServiceUnavailable || !strings.Contains(body, "pending") {
		t.Fatalf("over the per-address cap: %d %s", code, body)
	}

	// a real publisher still gets in once the pending ones time out, and they all end
	sfutest.WaitFor(t, "pending sessions to time out", 15*time.Second, func() bool { return h.srv.Sessions() == 0 })
	pub := publish(t, clientAPI(t), url, tokC)
	sfutest.WaitFor(t, "the publisher's video", 10*time.Second, func() bool {
		r := h.hub.Room("flood")
		return r != nil && r.MainPublisher() != nil && len(r.MainPublisher().Tracks()) > 0
	})
	pub.close()
	_ = pub.pc.Close()
	sfutest.WaitFor(t, "the publisher to leave", 10*time.Second, func() bool { return h.srv.Sessions() == 0 })
	time.Sleep(500 * time.Millisecond)
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			t.Errorf("warning in the log: %s", line)
		}
	}
	if strings.Count(logs.String(), "no ICE connectivity") == 0 {
		t.Errorf("the pending timeout is not logged:\n%s", logs.String())
	}
}
