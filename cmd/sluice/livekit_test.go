package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// livekitClientDist holds livekit-client's builds, pinned in sfu/livekit/testdata/js.
const livekitClientDist = "../../sfu/livekit/testdata/js/node_modules/livekit-client/dist"

// requireLivekitClient fails under CI (skips elsewhere) when `npm ci` has not installed
// livekit-client.
func requireLivekitClient(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(livekitClientDist + "/livekit-client.umd.js"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("livekit-client is not installed: run npm ci in sfu/livekit/testdata/js (%v)", err)
		}
		t.Skipf("livekit-client is not installed: run npm ci in sfu/livekit/testdata/js")
	}
}

// livekitToken is a LiveKit access token for identity in room. The daemon runs in open mode,
// which reads the token's room and identity without checking the signature.
func livekitToken(t *testing.T, room, identity string) string {
	t.Helper()
	yes := true
	tok, err := auth.Sign("test", "open-mode-does-not-check-this-secret", auth.Claims{
		Identity: identity, Name: identity, ExpiresAt: time.Now().Add(time.Hour).Unix(),
		Video: &auth.VideoGrant{RoomJoin: true, Room: room, CanPublish: &yes, CanSubscribe: &yes, CanPublishData: &yes},
	})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func events(r map[string]any) []string {
	raw, _ := r["events"].([]any)
	out := make([]string, 0, len(raw))
	for _, e := range raw {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}

func hasEvent(r map[string]any, e string) bool { return slices.Contains(events(r), e) }

func perPeer(r map[string]any, key, identity string) float64 {
	m, _ := r[key].(map[string]any)
	f, _ := m[identity].(float64)
	return f
}

// Two headless Chromiums join one room with livekit-client, beside an ffmpeg RTMP publisher
// (H.264 and AAC, which reaches the browsers as Opus through the transcoder): each browser
// paints the other's video and the RTMP video and receives their audio, and the SDK raises
// its room events for what the other browser does.
func TestLivekitClientRoom(t *testing.T) {
	requireChromium(t)
	requireLivekitClient(t)
	d := startDaemon(t, "events: { stats_interval: 1s }\n")
	ffmpegOBS(t, fmt.Sprintf("rtmp://127.0.0.1:%d/live/meet", d.RTMPPort), 120, 0)
	sfutest.WaitFor(t, "the RTMP publisher", 20*time.Second, func() bool {
		out, err := d.cli("status")
		return err == nil && strings.Contains(out, "H264")
	})
	ws := "ws" + strings.TrimPrefix(d.URL, "http")
	ps := newPageServer(t)
	rtmpIdentity := rtmpParticipant(t, d, "meet")

	ps.openPage(t, "livekit.html", "alice", url.Values{"url": {ws}, "token": {livekitToken(t, "meet", "alice")}, "script": {"a"}, "peer": {"bob"}})
	ps.waitReport(t, "alice", "alice connected", 30*time.Second, func(r map[string]any) bool { return hasEvent(r, "Connected:meet") })
	ps.openPage(t, "livekit.html", "bob", url.Values{"url": {ws}, "token": {livekitToken(t, "meet", "bob")}})

	for _, c := range []struct{ self, peer string }{{"alice", "bob"}, {"bob", "alice"}} {
		r := ps.waitReport(t, c.self, "video of "+c.peer+" and of the RTMP publisher", 60*time.Second, func(r map[string]any) bool {
			return perPeer(r, "frames", c.peer) > 30 && perPeer(r, "frames", rtmpIdentity) > 30 &&
				perPeer(r, "audio", c.peer) > 0 && perPeer(r, "audio", rtmpIdentity) > 0
		})
		for _, want := range []string{"TrackSubscribed:" + c.peer + "/video", "TrackSubscribed:" + c.peer + "/audio",
			"TrackSubscribed:" + rtmpIdentity + "/video", "TrackSubscribed:" + rtmpIdentity + "/audio"} {
			if !hasEvent(r, want) {
				t.Errorf("%s: no %s in %v", c.self, want, events(r))
			}
		}
		if w := perPeer(r, "width", rtmpIdentity); w != 640 {
			t.Errorf("%s paints the RTMP video %v wide, want 640", c.self, w)
		}
	}
	if !hasEvent(ps.report("alice"), "ParticipantConnected:bob") {
		t.Errorf("alice did not see bob connect: %v", events(ps.report("alice")))
	}
	// alice's publish and play streams report the figures of Chromium's RTCP.
	for _, dir := range []string{sfu.DirectionPublish, sfu.DirectionPlay} {
		ev := d.waitLogged(t, "alice's "+dir+" stats", 20*time.Second, func(e sfu.Event) bool {
			return e.Type == sfu.EventStreamStats && e.Participant.Identity == "alice" && e.Stream.Direction == dir &&
				e.Stream.PacketsLost != nil && e.Stream.JitterMs != nil && e.Stream.RTTMs != nil
		})
		if s := ev.Stream; s.Protocol != sfu.ProtocolWebRTC || *s.PacketsLost < 0 || *s.RTTMs < 0 || *s.RTTMs > 1000 || *s.JitterMs > 1000 {
			t.Errorf("alice's %s stats: %s, lost %d, jitter %v ms, rtt %v ms", dir, s.Protocol, *s.PacketsLost, *s.JitterMs, *s.RTTMs)
		}
	}

	// alice mutes and unmutes her camera, sets her metadata and sends data.
	ps.waitReport(t, "bob", "alice's room life", 30*time.Second, func(r map[string]any) bool {
		return hasEvent(r, "TrackMuted:alice/video") && hasEvent(r, "TrackUnmuted:alice/video") &&
			hasEvent(r, `ParticipantMetadataChanged:alice={"hand":"up"}`) && hasEvent(r, "DataReceived:alice=hello from alice")
	})

	// bob leaves (its browser is closed): alice sees him go.
	ps.closePage(t, "bob")
	ps.waitReport(t, "alice", "bob leaving", 30*time.Second, func(r map[string]any) bool {
		return hasEvent(r, "ParticipantDisconnected:bob")
	})
}

// rtmpParticipant returns the identity of the RTMP publisher in room.
func rtmpParticipant(t *testing.T, d *daemonProc, room string) string {
	t.Helper()
	var st struct {
		Participants []struct {
			Participant struct {
				Identity string `json:"identity"`
				Kind     string `json:"kind"`
			} `json:"participant"`
		} `json:"participants"`
	}
	getJSON(t, d.URL+"/v1/rooms/"+room, &st)
	for _, p := range st.Participants {
		if p.Participant.Kind == "rtmp" {
			return p.Participant.Identity
		}
	}
	t.Fatalf("no RTMP participant in room %s: %+v", room, st)
	return ""
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(getText(t, u)), v); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}
