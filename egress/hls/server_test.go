package hls

import (
	"context"
	"maps"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gohlslib/v2"
	"github.com/bluenviron/gohlslib/v2/pkg/codecs"

	"github.com/sluice-media/sluice/egress/egresstest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

type fixture struct {
	hub    *sfu.Hub
	events *sfu.LocalEmitter
	srv    *Server
	url    string
}

func newFixture(t *testing.T, cfg Config, keys map[string]string) *fixture {
	t.Helper()
	hub, events := sfutest.NewHub(t, nil)
	sfutest.RunHub(t, hub)
	gate := api.NewGate(auth.NewVerifier(auth.Config{Keys: keys}, nil), events)
	srv := NewServer(Options{Config: cfg, Hub: hub, Gate: gate})
	mux := http.NewServeMux()
	srv.Register(mux)
	hs := httptest.NewServer(mux)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	t.Cleanup(func() { hs.Close(); cancel(); <-done })
	return &fixture{hub: hub, events: events, srv: srv, url: hs.URL}
}

func testConfig() Config {
	c := DefaultConfig()
	c.IdleTimeout = time.Second
	return c
}

// gohlslib's client reads the room's LL-HLS: H.264 and AAC access units for the time it reads;
// once it is gone the muxer stops after its idle time, and its participant (kind hls) leaves
// with its play stream (protocol hls).
func TestClientReadsRoom(t *testing.T) {
	f := newFixture(t, testConfig(), nil)
	egresstest.StartPublisher(t, f.hub, "studio", "cam")

	var video, audio atomic.Int64
	c := &gohlslib.Client{URI: f.url + "/hls/studio/index.m3u8"}
	c.OnTracks = func(tracks []*gohlslib.Track) error {
		for _, tr := range tracks {
			switch tr.Codec.(type) {
			case *codecs.H264:
				c.OnDataH26x(tr, func(_, _ int64, _ [][]byte) { video.Add(1) })
			case *codecs.MPEG4Audio:
				c.OnDataMPEG4Audio(tr, func(_ int64, aus [][]byte) { audio.Add(int64(len(aus))) })
			}
		}
		return nil
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	sfutest.WaitFor(t, "60 video frames and audio", 20*time.Second, func() bool { return video.Load() >= 60 && audio.Load() >= 60 })
	c.Close()
	_ = c.Wait2()
	if n := f.srv.Muxers(); n != 1 {
		t.Fatalf("%d muxers, want 1", n)
	}
	sfutest.WaitFor(t, "the idle muxer to stop", 10*time.Second, func() bool { return f.srv.Muxers() == 0 })
	var joined, playing, stopped, left bool
	for _, ev := range f.events.Events(0) {
		switch {
		case ev.Type == sfu.EventParticipantJoined && ev.Participant.Kind == sfu.ParticipantHLS:
			joined = true
		case ev.Type == sfu.EventStreamPlaying && ev.Stream.Protocol == sfu.ProtocolHLS:
			playing = true
		case ev.Type == sfu.EventStreamStopped && ev.Stream.Protocol == sfu.ProtocolHLS:
			stopped = ev.Reason == sfu.ReasonClientDisconnected
		case ev.Type == sfu.EventParticipantLeft && ev.Participant.Kind == sfu.ParticipantHLS:
			left = ev.Reason == sfu.ReasonClientDisconnected
		}
	}
	if !joined || !playing || !stopped || !left {
		t.Errorf("events: joined %v playing %v stopped %v left %v", joined, playing, stopped, left)
	}
}

func get(t *testing.T, u, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestRequests(t *testing.T) {
	keys := map[string]string{"k": "hls-unit-secret-0123456789abcdef"}
	f := newFixture(t, testConfig(), keys)
	egresstest.StartPublisher(t, f.hub, "studio", "cam")
	sign := func(g auth.Grants) string {
		tok, err := auth.Sign("k", keys["k"], auth.Claims{ExpiresAt: time.Now().Add(time.Hour).Unix(), Grants: g})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	sub := sign(auth.Grants{Room: "studio", Subscribe: true})
	other := sign(auth.Grants{Room: "elsewhere", Subscribe: true})
	for _, tc := range []struct {
		name, path, token string
		status            int
	}{
		{"no token", "/hls/studio/index.m3u8", "", http.StatusUnauthorized},
		{"another room's token", "/hls/studio/index.m3u8", other, http.StatusForbidden},
		{"bad room name", "/hls/..bad/index.m3u8", sub, http.StatusBadRequest},
		{"no publisher", "/hls/studio/nobody/index.m3u8", sub, http.StatusNotFound},
		{"part of no muxer", "/hls/studio/x_part1.mp4", sub, http.StatusNotFound},
		{"main publisher", "/hls/studio/index.m3u8", sub, http.StatusOK},
		{"query token", "/hls/studio/index.m3u8?access_token=" + sub, "", http.StatusOK},
		{"identity", "/hls/studio/cam/index.m3u8", sub, http.StatusOK},
		{"unknown file", "/hls/studio/nope.mp4", sub, http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := get(t, f.url+tc.path, tc.token); got != tc.status {
				t.Errorf("GET %s: %d, want %d", tc.path, got, tc.status)
			}
		})
	}
	if n := f.srv.Muxers(); n != 2 {
		t.Errorf("%d muxers, want 2 (the main publisher's and cam's)", n)
	}
}

// readTracks reads a playlist with gohlslib's client until it has cond, and returns the codecs
// of its tracks and the frames read per codec.
func readTracks(t *testing.T, u string, cond func(frames map[string]int) bool) map[string]int {
	t.Helper()
	var mu sync.Mutex
	frames := map[string]int{}
	add := func(codec string, n int) { mu.Lock(); frames[codec] += n; mu.Unlock() }
	c := &gohlslib.Client{URI: u}
	c.OnTracks = func(tracks []*gohlslib.Track) error {
		for _, tr := range tracks {
			switch tr.Codec.(type) {
			case *codecs.H264:
				add("H264", 0)
				c.OnDataH26x(tr, func(_, _ int64, _ [][]byte) { add("H264", 1) })
			case *codecs.MPEG4Audio:
				add("aac", 0)
				c.OnDataMPEG4Audio(tr, func(_ int64, aus [][]byte) { add("aac", len(aus)) })
			case *codecs.Opus:
				add("opus", 0)
				c.OnDataOpus(tr, func(_ int64, packets [][]byte) { add("opus", len(packets)) })
			}
		}
		return nil
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { c.Close(); _ = c.Wait2() }()
	snapshot := func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(frames)
	}
	sfutest.WaitFor(t, "frames", 20*time.Second, func() bool { return cond(snapshot()) })
	return snapshot()
}

// Opus passes through to players that take it; a player that needs AAC (?audio=aac) gets it
// through the transcoder, and without one the video alone, the audio's subscription failing
// with transcoder_unavailable.
func TestOpusPassesOrNeedsTranscoder(t *testing.T) {
	f := newFixture(t, testConfig(), nil)
	egresstest.StartPublisherWith(t, f.hub, "talk", "cam", egresstest.PublisherOptions{Opus: true})
	got := readTracks(t, f.url+"/hls/talk/index.m3u8", func(n map[string]int) bool { return n["H264"] >= 30 && n["opus"] >= 30 })
	if _, ok := got["aac"]; ok {
		t.Errorf("tracks %v: Opus should pass through", got)
	}
	got = readTracks(t, f.url+"/hls/talk/index.m3u8?audio=aac", func(n map[string]int) bool { return n["H264"] >= 30 })
	if len(got) != 1 {
		t.Errorf("tracks %v: without a transcoder the AAC muxer plays the video alone", got)
	}
	failed := false
	for _, ev := range f.events.Events(0) {
		if ev.Type == sfu.EventTrackSubscriptionFailed && ev.Participant.Kind == sfu.ParticipantHLS && ev.Error != nil {
			failed = ev.Error.Code == sfu.CodeTranscoderUnavailable
		}
	}
	if !failed {
		t.Error("no track.subscription_failed (transcoder_unavailable) for the audio")
	}
}
