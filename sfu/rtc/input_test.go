package rtc

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pion/transport/v4/test"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
)

const testSecret = "0123456789abcdef0123456789abcdef"

func mint(t *testing.T, g auth.Grants) string {
	t.Helper()
	tok, err := auth.Sign("app", testSecret, auth.Claims{ExpiresAt: time.Now().Add(time.Hour).Unix(), Grants: g})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type apiError struct {
	Error struct{ Code, Message string } `json:"error"`
}

func do(t *testing.T, method, url, contentType, token string, body io.Reader) (int, apiError) {
	t.Helper()
	req, _ := http.NewRequest(method, url, body)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e apiError
	_ = json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e
}

// offerSDP makes a real offer from a pion peer with the given codecs.
func offerSDP(t testing.TB, register func(*webrtc.MediaEngine) error, kinds ...webrtc.RTPCodecType) string {
	t.Helper()
	m := &webrtc.MediaEngine{}
	if err := register(m); err != nil {
		t.Fatal(err)
	}
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(m)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, k := range kinds {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
			t.Fatal(err)
		}
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	return offer.SDP
}

func TestBadInputGetsPreciseErrors(t *testing.T) {
	defer test.CheckRoutines(t)()
	h := newHarness(t, auth.Config{Keys: map[string]string{"app": testSecret}})
	defer h.close()
	client := clientAPI(t)

	// A live session that must keep flowing through all of this.
	pub := publish(t, client, h.http.URL+"/whip/live", mint(t, auth.Grants{Room: "live", Publish: true}))
	defer pub.close()
	waitUntil(t, "publisher", 10*time.Second, func() bool { r := h.hub.Room("live"); return r != nil && r.MainPublisher() != nil })
	viewer := play(t, client, h.http.URL+"/whep/live", mint(t, auth.Grants{Room: "live", Subscribe: true}), true)
	defer viewer.close()
	waitUntil(t, "viewer media", 10*time.Second, func() bool { return viewer.video.Load() > 0 })

	pubOther := mint(t, auth.Grants{Room: "other", Publish: true})
	admin := mint(t, auth.Grants{Admin: true})
	goodOffer := offerSDP(t, (*webrtc.MediaEngine).RegisterDefaultCodecs, webrtc.RTPCodecTypeVideo)
	onlyUnknown := offerSDP(t, func(m *webrtc.MediaEngine) error {
		return m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: "video/H266", ClockRate: 90000}, PayloadType: 100}, webrtc.RTPCodecTypeVideo)
	}, webrtc.RTPCodecTypeVideo)

	failedBefore := countType(h.events.Events(0), sfu.EventAuthFailed)
	for _, tc := range []struct {
		name, method, path, ctype, token, body string
		status                                 int
		code                                   string
		authFailed                             string
	}{
		{"no token", "POST", "/whip/live", "application/sdp", "", goodOffer, 401, "unauthorized", sfu.AuthMissingToken},
		{"garbage token", "POST", "/whip/live", "application/sdp", "x.y.z", goodOffer, 401, "unauthorized", sfu.AuthInvalidToken},
		{"token for another room", "POST", "/whip/live", "application/sdp", pubOther, goodOffer, 403, "forbidden", sfu.AuthPermissionDenied},
		{"publish token cannot play", "POST", "/whep/other", "application/sdp", pubOther, goodOffer, 403, "forbidden", sfu.AuthPermissionDenied},
		{"publish token cannot use the API", "GET", "/v1/rooms", "", pubOther, "", 403, "forbidden", sfu.AuthPermissionDenied},
		{"malformed SDP", "POST", "/whip/other", "application/sdp", pubOther, "v=0\r\nthis is not sdp\r\n", 400, "invalid_sdp", ""},
		{"SDP without media", "POST", "/whip/other", "application/sdp", pubOther, "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", 400, "invalid_sdp", ""},
		{"no supported codec", "POST", "/whip/other", "application/sdp", pubOther, onlyUnknown, 406, "unsupported_codec", ""},
		{"wrong content type", "POST", "/whip/other", "application/json", pubOther, goodOffer, 415, "unsupported_media_type", ""},
		{"oversized body", "POST", "/whip/other", "application/sdp", pubOther, strings.Repeat("a", MaxSDPBody+1), 413, "body_too_large", ""},
		{"bad room name", "POST", "/whip/..%2fetc", "application/sdp", pubOther, goodOffer, 400, "bad_request", ""},
		{"whep unknown room", "POST", "/whep/nowhere", "application/sdp", admin, goodOffer, 404, "not_found", ""},
		{"whep unknown identity", "POST", "/whep/live/ghost", "application/sdp", admin, goodOffer, 404, "no_publisher", ""},
		{"invalid JSON", "POST", "/v1/rooms", "application/json", admin, `{"name": `, 400, "invalid_json", ""},
		{"unknown JSON field", "POST", "/v1/rooms", "application/json", admin, `{"name":"x","colour":"red"}`, 400, "invalid_json", ""},
		{"oversized JSON", "POST", "/v1/rooms", "application/json", admin, `{"name":"` + strings.Repeat("a", 2<<20) + `"}`, 413, "body_too_large", ""},
		{"session without a token", "DELETE", "/whip/session/nope", "", "", "", 401, "unauthorized", sfu.AuthMissingToken},
		{"unknown session", "DELETE", "/whip/session/nope", "", pubOther, "", 404, "not_found", ""},
		{"unknown endpoint", "GET", "/v1/nothing", "", admin, "", 404, "not_found", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.events.Events(0)
			status, body := do(t, tc.method, h.http.URL+tc.path, tc.ctype, tc.token, strings.NewReader(tc.body))
			if status != tc.status || body.Error.Code != tc.code {
				t.Fatalf("got %d %q (%s), want %d %q", status, body.Error.Code, body.Error.Message, tc.status, tc.code)
			}
			if body.Error.Message == "" {
				t.Fatal("error without a message")
			}
			after := h.events.Events(before[len(before)-1].Seq)
			var failed *sfu.Event
			for i := range after {
				if after[i].Type == sfu.EventAuthFailed {
					failed = &after[i]
				}
			}
			switch {
			case tc.authFailed == "" && failed != nil:
				t.Fatalf("unexpected auth.failed %s", failed.Reason)
			case tc.authFailed != "" && (failed == nil || failed.Reason != tc.authFailed || failed.RemoteAddr == ""):
				t.Fatalf("want auth.failed %s with remote_addr, got %+v", tc.authFailed, failed)
			}
			for _, e := range after {
				raw, _ := json.Marshal(e)
				if strings.Contains(string(raw), testSecret) || (tc.token != "" && strings.Contains(string(raw), tc.token)) {
					t.Fatal("a secret or token reached an event")
				}
			}
		})
	}
	if n := countType(h.events.Events(0), sfu.EventAuthFailed) - failedBefore; n != 6 {
		t.Errorf("auth.failed events = %d, want 6", n)
	}
	// No half-created objects: the refused requests left no participant or room behind.
	if r := h.hub.Room("other"); r != nil {
		t.Errorf("a refused request left room %q with %d participants", r.Name(), len(r.Participants()))
	}
	// And the live session never stopped.
	got := viewer.video.Load()
	waitUntil(t, "the live viewer to keep receiving", 5*time.Second, func() bool { return viewer.video.Load() > got+30 })
}

func countType(evs []sfu.Event, typ string) int {
	n := 0
	for _, e := range evs {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// A viewer that can take the audio but not the video codec gets track.subscription_failed for
// the video and still receives the audio.
func TestViewerWithoutTheVideoCodecStillGetsAudio(t *testing.T) {
	defer test.CheckRoutines(t)()
	h := newHarness(t, auth.Config{})
	defer h.close()
	pub := publish(t, clientAPI(t), h.http.URL+"/whip/r", "")
	defer pub.close()
	waitUntil(t, "publisher", 10*time.Second, func() bool {
		r := h.hub.Room("r")
		return r != nil && r.MainPublisher() != nil && len(r.MainPublisher().Tracks()) == 2
	})

	m := &webrtc.MediaEngine{}
	for _, c := range []struct {
		p webrtc.RTPCodecParameters
		k webrtc.RTPCodecType
	}{
		{webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, PayloadType: 96}, webrtc.RTPCodecTypeVideo},
		{webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, PayloadType: 111}, webrtc.RTPCodecTypeAudio},
	} {
		if err := m.RegisterCodec(c.p, c.k); err != nil {
			t.Fatal(err)
		}
	}
	var s webrtc.SettingEngine
	s.SetIncludeLoopbackCandidate(true)
	s.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	vp8Only := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(s))
	v := play(t, vp8Only, h.http.URL+"/whep/r", "", true)
	defer v.close()
	waitUntil(t, "audio", 10*time.Second, func() bool { return v.audio.Load() > 10 })
	if v.video.Load() != 0 {
		t.Fatal("video arrived in a codec the viewer did not offer")
	}
	var failed *sfu.Event
	for _, e := range h.events.Events(0) {
		if e.Type == sfu.EventTrackSubscriptionFailed {
			failed = &e
		}
	}
	if failed == nil || failed.Track.Kind != "video" || failed.Error == nil || !strings.Contains(failed.Error.Message, "H264") {
		t.Fatalf("want track.subscription_failed for the H264 video, got %+v", failed)
	}
}

// When the main publisher leaves, the viewer switches to the next one without renegotiating,
// and its sequence numbers run on.
func TestViewerFollowsTheMainPublisher(t *testing.T) {
	defer test.CheckRoutines(t)()
	h := newHarness(t, auth.Config{})
	defer h.close()
	client := clientAPI(t)
	first := publish(t, client, h.http.URL+"/whip/stage", "")
	defer first.close()
	waitUntil(t, "first publisher", 10*time.Second, func() bool {
		r := h.hub.Room("stage")
		return r != nil && r.MainPublisher() != nil && len(r.MainPublisher().Tracks()) == 2
	})
	second := publish(t, client, h.http.URL+"/whip/stage", "")
	defer second.close()
	waitUntil(t, "second publisher", 10*time.Second, func() bool { return len(h.hub.Room("stage").Participants()) == 2 })

	v := &seqViewer{}
	pc := v.start(t, client)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := Negotiate(ctx, h.http.URL+"/whep/stage", "", pc)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sess.Close(context.Background()); _ = pc.Close(); v.wait() }()
	waitUntil(t, "video from the first publisher", 10*time.Second, func() bool { return v.count() > 30 })

	first.close()
	before := v.count()
	waitUntil(t, "video from the second publisher", 10*time.Second, func() bool { return v.count() > before+60 })
	if jumps := v.jumps(); jumps != 0 {
		t.Fatalf("sequence numbers jumped %d times across the switch", jumps)
	}
	for _, e := range h.events.Events(0) {
		if e.Type == sfu.EventStreamStopped && e.Reason == sfu.ReasonSourceChanged {
			t.Fatal("the viewer was ended although the codecs match")
		}
	}
}

// Past the CPU budget new viewers are refused with 503 and Retry-After; publishers still get in.
func TestWHEPRefusedWhenOverloaded(t *testing.T) {
	defer test.CheckRoutines(t)()
	start := time.Now()
	h := newHarnessWith(t, auth.Config{}, func(o *sfu.Options) {
		// A process that has used every core since it started.
		o.CPU = func() time.Duration { return time.Duration(float64(time.Since(start)) * float64(runtime.NumCPU())) }
	})
	defer h.close()
	pub := publish(t, clientAPI(t), h.http.URL+"/whip/busy", "")
	defer pub.close()
	waitUntil(t, "the overload to be measured", 10*time.Second, h.hub.Overloaded)
	req, _ := http.NewRequest("POST", h.http.URL+"/whep/busy", strings.NewReader(offerSDP(t, (*webrtc.MediaEngine).RegisterDefaultCodecs, webrtc.RTPCodecTypeVideo)))
	req.Header.Set("Content-Type", "application/sdp")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e apiError
	_ = json.NewDecoder(resp.Body).Decode(&e)
	if resp.StatusCode != 503 || e.Error.Code != "overloaded" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("got %d %q, want 503 overloaded with Retry-After", resp.StatusCode, e.Error.Code)
	}
}

// When the only publisher leaves and, after a while without any, another one comes (a camera
// reconnecting), the viewer resumes on its own and its sequence numbers run on: no repeats,
// no gaps.
func TestViewerResumesWhenTheSourceReturns(t *testing.T) {
	defer test.CheckRoutines(t)()
	h := newHarness(t, auth.Config{})
	defer h.close()
	client := clientAPI(t)
	first := publish(t, client, h.http.URL+"/whip/cam", "")
	defer first.close()
	waitUntil(t, "first publisher", 10*time.Second, func() bool {
		r := h.hub.Room("cam")
		return r != nil && r.MainPublisher() != nil && len(r.MainPublisher().Tracks()) == 2
	})
	v := &seqViewer{}
	pc := v.start(t, client)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := Negotiate(ctx, h.http.URL+"/whep/cam", "", pc)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sess.Close(context.Background()); _ = pc.Close(); v.wait() }()
	// A first session long enough that replaying its sequence numbers would stall the viewer
	// (SRTP replay protection drops them) for longer than the wait below.
	waitUntil(t, "video from the first publisher", 20*time.Second, func() bool { return v.count() > 250 })

	first.close()
	waitUntil(t, "the publisher to leave", 10*time.Second, func() bool { return h.hub.Room("cam").MainPublisher() == nil })
	time.Sleep(500 * time.Millisecond) // a while without source
	before := v.count()
	second := publish(t, client, h.http.URL+"/whip/cam", "")
	defer second.close()
	// The returning publisher's next keyframe comes within a second.
	waitUntil(t, "video from the returning publisher", 4*time.Second, func() bool { return v.count() > before+30 })
	if jumps := v.jumps(); jumps != 0 {
		t.Errorf("sequence numbers jumped %d times across the return", jumps)
	}
	if d := v.duplicates(); d != 0 {
		t.Errorf("%d sequence numbers were sent twice across the return", d)
	}
}
