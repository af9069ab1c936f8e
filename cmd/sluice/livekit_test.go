package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	lkp "github.com/livekit/protocol/livekit"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/recorder"
	"github.com/sluice-media/sluice/recorder/rectest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/sfutest"
	"github.com/sluice-media/sluice/webhooks"
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
// its room events for what the other browser does and what the server does (room metadata,
// data, removal); a browser whose signalling drops resumes, then reconnects fully, and its
// video reaches the other again.
func TestLivekitClientRoom(t *testing.T) {
	requireChromium(t)
	requireLivekitClient(t)
	secret := webhooks.NewSecret()
	rxAddr := fmt.Sprintf("127.0.0.1:%d", sfutest.FreeTCPPort(t))
	rx := newHookReceiver(secret)
	rx.listen(t, rxAddr)
	d := startDaemon(t, fmt.Sprintf("events: { stats_interval: 1s }\nwebhooks:\n  endpoints: [{id: rx, url: \"http://%s/hook\", secret: %q}]\n", rxAddr, secret))
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

	// alice mutes and unmutes her camera, sets her metadata and sends data. This ends before
	// the recording below starts: a file written while her camera is muted holds audio only.
	ps.waitReport(t, "bob", "alice's room life", 30*time.Second, func(r map[string]any) bool {
		return hasEvent(r, "TrackMuted:alice/video") && hasEvent(r, "TrackUnmuted:alice/video") &&
			hasEvent(r, `ParticipantMetadataChanged:alice={"hand":"up"}`) && hasEvent(r, "DataReceived:alice=hello from alice")
	})

	// A WHEP viewer of alice decodes her H.264, and a recording of her plays.
	viewer, err := playH264(d.URL+"/whep/meet/alice", pionAPI(t, h264Only, webrtc.RTPCodecTypeVideo))
	if err != nil {
		t.Fatalf("WHEP of alice: %v", err)
	}
	out, err := d.cli("record", "start", "--room", "meet", "--participant", "alice", "-o", "json")
	if err != nil {
		t.Fatalf("record start: %v\n%s", err, out)
	}
	rec := startedRecording(t, out)
	sfutest.WaitFor(t, "60 frames of alice over WHEP", 30*time.Second, func() bool { return viewer.count() >= 60 })
	d.waitRecording(t, rec, 30*time.Second, func(r recorder.Recording) bool { return r.DurationMs > 3000 })
	if out, err := d.cli("record", "stop", rec); err != nil {
		t.Fatalf("record stop: %v\n%s", err, out)
	}
	viewer.mu.Lock()
	stream := bytes.Clone(viewer.stream)
	viewer.mu.Unlock()
	viewer.close()
	path := filepath.Join(t.TempDir(), "alice.h264")
	if err := os.WriteFile(path, stream, 0o600); err != nil {
		t.Fatal(err)
	}
	probe, err := exec.Command(sfutest.RequireTool(t, "ffprobe"), "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", path).CombinedOutput()
	if err != nil || strings.TrimSpace(string(probe)) != "h264" {
		t.Errorf("alice over WHEP does not decode as H.264: %v %s", err, probe)
	}
	// The recording may be split (the browser's resolution ramps up); every file decodes.
	r := d.recordingOf(t, rec)
	if len(r.Files) == 0 {
		t.Errorf("alice's recording has no files: %+v", r)
	}
	for _, f := range r.Files {
		file := filepath.Join(d.recordingsDir(), filepath.FromSlash(f.Path))
		var kinds []string
		for _, st := range rectest.FFprobe(t, file).Streams {
			kinds = append(kinds, st.CodecType)
		}
		if slices.Sort(kinds); !slices.Equal(kinds, []string{"audio", "video"}) {
			t.Errorf("%s holds %v, want audio and video", f.Path, kinds)
		}
		if e := rectest.DecodeErrors(t, file); e != "" {
			t.Errorf("%s: ffmpeg decode errors:\n%s", f.Path, e)
		}
	}

	// The server sets the room's metadata and sends data: both browsers get them.
	for _, args := range [][]string{
		{"rooms", "update", "meet", "--metadata", `{"topic":"demo"}`},
		{"rooms", "send", "meet", "--data", "hello from the server"},
	} {
		if out, err := d.cli(args...); err != nil {
			t.Fatalf("sluice %v: %v\n%s", args, err, out)
		}
	}
	for _, id := range []string{"alice", "bob"} {
		ps.waitReport(t, id, "the room metadata and the server's data", 30*time.Second, func(r map[string]any) bool {
			return hasEvent(r, `RoomMetadataChanged:{"topic":"demo"}`) && hasEvent(r, "DataReceived:?=hello from the server")
		})
	}

	// alice's signalling drops (the SDK's simulateScenario closes its WebSocket): it resumes,
	// and bob keeps seeing her, without a disconnect.
	for _, c := range []struct{ scenario, events string }{
		{"signal-reconnect", "SignalReconnecting,Reconnected"}, // resumed
		{"full-reconnect", "Reconnecting,Reconnected"},         // joined anew
	} {
		scenario := c.scenario
		seen := perPeer(ps.report("bob"), "frames", "alice")
		if out, err := d.cli("rooms", "send", "meet", "alice", "--data", scenario); err != nil {
			t.Fatalf("sluice rooms send: %v\n%s", err, out)
		}
		r := ps.waitReport(t, "alice", scenario, 60*time.Second, func(r map[string]any) bool {
			return slices.ContainsFunc(events(r), func(e string) bool { return strings.HasPrefix(e, "MediaAfter:"+scenario+"=") })
		})
		if !hasEvent(r, "MediaAfter:"+scenario+"="+c.events) {
			t.Errorf("alice's events around %s: %v; want %s", scenario, events(r), c.events)
		}
		ps.waitReport(t, "bob", "alice's video after her "+scenario, 60*time.Second, func(r map[string]any) bool {
			return perPeer(r, "frames", "alice") > seen+30
		})
		if scenario == "signal-reconnect" && hasEvent(ps.report("bob"), "ParticipantDisconnected:alice") {
			t.Errorf("bob saw alice leave during her resume: %v", events(ps.report("bob")))
		}
	}
	captureLivekitRequests(t, ps, "alice", "bob")

	// The server removes bob: his SDK reports the reason, alice sees him go.
	if out, err := d.cli("rooms", "kick", "meet", "bob"); err != nil {
		t.Fatalf("sluice rooms kick: %v\n%s", err, out)
	}
	removed := fmt.Sprint(int32(lkp.DisconnectReason_PARTICIPANT_REMOVED))
	ps.waitReport(t, "bob", "bob removed", 30*time.Second, func(r map[string]any) bool {
		return hasEvent(r, "Disconnected:"+removed)
	})
	ps.waitReport(t, "alice", "bob leaving", 30*time.Second, func(r map[string]any) bool {
		return hasEvent(r, "ParticipantDisconnected:bob")
	})

	// The story by webhook: signed, each participant joined once and left once (alice's
	// resume made no flicker; her full reconnect is a new participant), in seq order.
	byPart := map[string][]string{} // participant sid: its join/leave/publish events, in arrival order
	var names = map[string]string{}
	sfutest.WaitFor(t, "bob's participant.left by webhook", 30*time.Second, func() bool {
		rx.mu.Lock()
		defer rx.mu.Unlock()
		clear(byPart)
		var last uint64
		for _, ev := range rx.events {
			if ev.Seq < last {
				t.Fatalf("webhook %s (seq %d) after seq %d", ev.Type, ev.Seq, last)
			}
			last = ev.Seq
			if ev.Participant == nil || (ev.Participant.Identity != "alice" && ev.Participant.Identity != "bob") {
				continue // the RTMP publisher, the WHEP viewer
			}
			switch ev.Type {
			case sfu.EventParticipantJoined, sfu.EventParticipantLeft, sfu.EventTrackPublished:
				byPart[ev.Participant.SID] = append(byPart[ev.Participant.SID], strings.TrimSpace(ev.Type+" "+ev.Reason))
				names[ev.Participant.SID] = ev.Participant.Identity
			}
		}
		return slices.ContainsFunc(slices.Collect(maps.Values(byPart)), func(s []string) bool { return slices.Contains(s, "participant.left removed") })
	})
	rx.mu.Lock()
	if rx.bad != 0 {
		t.Errorf("%d webhooks failed verification", rx.bad)
	}
	rx.mu.Unlock()
	count := map[string]int{}
	for sid, evs := range byPart {
		count[names[sid]]++
		want := []string{"participant.joined", "track.published", "track.published"}
		switch {
		case names[sid] == "bob":
			want = append(want, "participant.left removed")
		case names[sid] == "alice" && slices.Contains(evs, "participant.left duplicate_identity"):
			want = append(want, "participant.left duplicate_identity")
		}
		if !slices.Equal(evs, want) {
			t.Errorf("%s (%s) by webhook: %q, want %q", names[sid], sid, evs, want)
		}
	}
	if count["alice"] != 2 || count["bob"] != 1 {
		t.Errorf("participants by webhook %v: want alice twice (before and after her full reconnect), bob once", count)
	}

	// One terminal event per object: every track and stream of a participant who left (bob,
	// alice before her full reconnect, the WHEP viewer) has ended, and so has the recording.
	state := rx.lifecycles(t)
	left := map[string]bool{}    // participant SIDs
	owner := map[string]string{} // track and stream keys: their participant's SID
	rx.mu.Lock()
	for _, ev := range rx.events {
		key, _, ok := webhooks.ObjectOf(&ev)
		switch {
		case !ok || ev.Participant == nil:
		case ev.Type == sfu.EventParticipantLeft:
			left[ev.Participant.SID] = true
		case strings.HasPrefix(key, "track:") || strings.HasPrefix(key, "stream:"):
			owner[key] = ev.Participant.SID
		}
	}
	rx.mu.Unlock()
	for key, sid := range owner {
		if left[sid] && state[key] != webhooks.OpEnd {
			t.Errorf("%s of participant %s (%s) has no terminal event by webhook", key, sid, names[sid])
		}
	}
	if st := state["recording:"+rec]; st != webhooks.OpEnd {
		t.Errorf("recording %s by webhook: state %q, want ended", rec, st)
	}
}

// captureLivekitRequests adds the requests the pages' SDKs sent to sfu/livekit's fuzz corpus
// when SLUICE_CAPTURE_LIVEKIT names it.
func captureLivekitRequests(t *testing.T, ps *pageServer, ids ...string) {
	dir := os.Getenv("SLUICE_CAPTURE_LIVEKIT")
	if dir == "" {
		return
	}
	for _, id := range ids {
		sent, _ := ps.report(id)["sent"].([]any)
		for _, s := range sent {
			b64, _ := s.(string)
			data, err := base64.StdEncoding.DecodeString(b64)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(data)
			body := fmt.Sprintf("go test fuzz v1\nbool(false)\n[]byte(%q)\n", data)
			if err := os.WriteFile(filepath.Join(dir, "lkjs-"+hex.EncodeToString(sum[:8])), []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
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
