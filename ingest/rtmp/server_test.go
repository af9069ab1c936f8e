package rtmp

import (
	"strings"
	"testing"
	"time"

	"github.com/pion/transport/v4/test"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/media"
	"github.com/sluice-media/sluice/sfu/rtmpproto"
	"github.com/sluice-media/sluice/sfu/rtmpproto/rtmptest"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// An OBS-like session: the tags become an H.264 and an AAC track with the resolution of the
// SPS, RTP timestamps are the presentation times (DTS + composition offset) rebased to the
// first message, audio timestamps count samples, both tracks share one sender report, and a
// clean unpublish ends everything with client_disconnected.
func TestPublishBecomesTracks(t *testing.T) {
	defer test.CheckRoutines(t)()
	h := newHarness(t, harnessOptions{})
	defer h.Close()
	c := dialClient(t, h.addr, nil)
	defer c.close()
	c.mustPublish("studio/cam")
	p := h.Participant("studio", "cam")
	if p.Kind() != sfu.ParticipantRTMP {
		t.Fatalf("kind %q", p.Kind())
	}
	if err := c.metadata(640, 480); err != nil { // the SPS says 320x240: it wins
		t.Fatal(err)
	}
	const base = 5000 // timestamps need not start at 0
	must(t, c.video(base, rtmptest.AVCTag(true, 0, 0, rtmptest.AVCConfigRecord(rtmptest.SPS, rtmptest.PPS))))
	must(t, c.audio(base, rtmptest.AACTag(0, rtmptest.ASC)))
	video := trackOf(t, p, sfu.KindVideo)
	audio := trackOf(t, p, sfu.KindAudio)
	vs, as := &sink{}, &sink{}
	vsub, err := video.Subscribe(vs, sfu.SubscribeOptions{QueueSize: 4096})
	must(t, err)
	defer vsub.Close()
	asub, err := audio.Subscribe(as, sfu.SubscribeOptions{QueueSize: 4096})
	must(t, err)
	defer asub.Close()

	// Decode order I P B B with composition offsets, as x264 with B-frames sends them.
	frames := []struct {
		dts, cts int32
		key      bool
		size     int
	}{{0, 67, true, 5000}, {33, 100, false, 300}, {67, 0, false, 200}, {100, 0, false, 200}, {133, 67, false, 300}}
	for _, f := range frames {
		nal := rtmptest.FakeSlice(f.size)
		if f.key {
			nal = rtmptest.FakeIDR(f.size)
		}
		must(t, c.video(base+uint32(f.dts), rtmptest.AVCTag(f.key, 1, f.cts, rtmptest.LengthPrefixed(nal))))
	}
	for i := range 50 {
		must(t, c.audio(base+uint32(i*1024*1000/48000), rtmptest.AACTag(1, []byte{0x21, byte(i)})))
	}
	sfutest.WaitFor(t, "every frame", 10*time.Second, func() bool {
		n := 0
		for _, pk := range vs.all() {
			if pk.Header.Marker {
				n++
			}
		}
		return n == len(frames) && len(as.all()) == 50
	})

	if c := video.Codec(); c.Name != sfu.CodecH264 || !strings.Contains(c.Fmtp, "profile-level-id=64000d") {
		t.Errorf("video codec %+v", c)
	}
	if w, hgt := video.Size(); w != 320 || hgt != 240 {
		t.Errorf("video size %dx%d, want the SPS's 320x240", w, hgt)
	}
	if c := audio.Codec(); c.Name != sfu.CodecAAC || c.ClockRate != 48000 || c.Channels != 2 {
		t.Errorf("audio codec %+v", c)
	}
	pkts := vs.all()
	if !pkts[0].Keyframe || !sfu.IsKeyframe(sfu.CodecH264, pkts[0].Payload) {
		t.Error("the first video packet does not start a keyframe")
	}
	if w, hgt, ok := sfu.VideoSize(sfu.CodecH264, pkts[0].Payload); !ok || w != 320 || hgt != 240 {
		t.Error("the first video packet does not carry the SPS")
	}
	var got []uint32
	for _, pk := range pkts {
		if pk.Header.Marker {
			got = append(got, pk.Header.Timestamp)
		}
	}
	for i, f := range frames {
		if want := uint32((f.dts + f.cts) * 90); got[i] != want {
			t.Errorf("frame %d: RTP timestamp %d, want (dts+cts)*90 = %d", i, got[i], want)
		}
	}
	for i, pk := range as.all() {
		if want := uint32(i * 1024); pk.Header.Timestamp != want {
			t.Fatalf("audio frame %d: RTP timestamp %d, want %d", i, pk.Header.Timestamp, want)
		}
	}
	vsr, ok1 := video.SenderReport()
	asr, ok2 := audio.SenderReport()
	if !ok1 || !ok2 || vsr.RTPTime != 0 || asr.RTPTime != 0 || !vsr.NTPTime.Equal(asr.NTPTime) {
		t.Errorf("sender reports %+v %+v", vsr, asr)
	}

	must(t, c.unpublish())
	h.WaitEvent("participant.left", 10*time.Second, isReason(sfu.EventParticipantLeft, "cam", sfu.ReasonClientDisconnected))
	var types []string
	for _, e := range h.Events.Events(0) {
		if e.Participant != nil && e.Participant.Identity == "cam" {
			types = append(types, e.Type)
			if e.Type == sfu.EventStreamPublishing && (e.Stream.Protocol != sfu.ProtocolRTMP || len(e.Stream.Tracks) != 1) {
				t.Errorf("stream.publishing %+v", e.Stream)
			}
			if e.Type == sfu.EventStreamUnpublished && e.Reason != sfu.ReasonClientDisconnected {
				t.Errorf("stream.unpublished reason %q", e.Reason)
			}
		}
	}
	// onMetaData announces video only (audiocodecid 0): stream.publishing lists it, and the
	// audio track that comes anyway is stream.updated
	want := "participant.joined track.published stream.publishing track.published stream.updated track.updated " +
		"track.unpublished track.unpublished stream.unpublished participant.left"
	if strings.Join(types, " ") != strings.Replace(want, "track.updated ", "", 1) && strings.Join(types, " ") != want {
		t.Errorf("events:\n%s", h.EventList())
	}
	c.close()
}

// background starts a publisher that must stay untouched while a test misbehaves elsewhere.
func background(t *testing.T, h *harness, key, room, identity string) (*feeder, *sfu.Track) {
	t.Helper()
	c := dialClient(t, h.addr, nil)
	c.mustPublish(key)
	f := startFeeder(t, c)
	p := h.Participant(room, identity)
	tr := trackOf(t, p, sfu.KindVideo)
	flowing(t, tr, 10*time.Second)
	return f, tr
}

// untouched checks that the background session still flows and never left.
func untouched(t *testing.T, h *harness, identity string, tr *sfu.Track) {
	t.Helper()
	flowing(t, tr, 10*time.Second)
	sid := tr.Participant().SID()
	if h.Has(func(e sfu.Event) bool { return e.Type == sfu.EventParticipantLeft && e.Participant.SID == sid }) {
		t.Errorf("the other session %s was disturbed:\n%s", identity, h.EventList())
	}
}

// With auth keys, a publish needs an ingest's stream key or a token with a publish grant:
// anything else is answered NetStream.Publish.BadName, reported as auth.failed with the
// reason and the address, the connection is closed, and another session goes on.
func TestKeyModeRefusesWrongKeys(t *testing.T) {
	const secret = "a-secret-of-at-least-32-characters-long"
	h := newHarness(t, harnessOptions{auth: auth.Config{Keys: map[string]string{"app": secret}}})
	obs, err := h.Store.Create(ingest.Definition{Type: ingest.TypeRTMP, Room: "main", Identity: "obs"}, time.Now())
	must(t, err)
	_, bgTrack := background(t, h, obs.StreamKey, "main", "obs")

	sign := func(g auth.Grants, identity string, ttl time.Duration) string {
		tok, err := auth.Sign("app", secret, auth.Claims{Identity: identity, ExpiresAt: time.Now().Add(ttl).Unix(), Grants: g})
		must(t, err)
		return tok
	}
	cases := []struct {
		name, key, reason string
	}{
		{"unknown stream key", "sk_notAKeyAtAllxxxxxxxxxxxx", sfu.AuthUnknownStreamKey},
		{"a room name is not a key", "main", sfu.AuthUnknownStreamKey},
		{"token without a publish grant", sign(auth.Grants{Room: "main", Subscribe: true}, "v", time.Hour), sfu.AuthPermissionDenied},
		{"expired token", sign(auth.Grants{Room: "main", Publish: true}, "v", -time.Minute), sfu.AuthExpiredToken},
		{"token signed with another secret", func() string {
			tok, _ := auth.Sign("app", strings.Repeat("z", 40), auth.Claims{ExpiresAt: time.Now().Add(time.Hour).Unix(), Grants: auth.Grants{Room: "main", Publish: true}})
			return tok
		}(), sfu.AuthInvalidToken},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(h.Events.Events(0))
			c := dialClient(t, h.addr, nil)
			if answer, err := c.connect("live"); err != nil || answer != "_result" {
				t.Fatalf("connect: %s %v", answer, err)
			}
			code, err := c.publish(tc.key)
			if err != nil || code != "NetStream.Publish.BadName" {
				t.Fatalf("publish answered %q, %v", code, err)
			}
			if !c.waitClosed(5 * time.Second) {
				t.Fatal("the server kept the connection")
			}
			var found bool
			for _, e := range h.Events.Events(0)[before:] {
				if e.Type == sfu.EventAuthFailed {
					found = true
					if e.Reason != tc.reason || e.Protocol != sfu.ProtocolRTMP || !strings.HasPrefix(e.RemoteAddr, "127.0.0.1:") {
						t.Errorf("auth.failed %+v", e)
					}
				}
				if e.Type == sfu.EventParticipantJoined {
					t.Errorf("a refused publisher joined")
				}
			}
			if !found {
				t.Errorf("no auth.failed")
			}
			if tc.key != "main" {
				h.SecretsAbsent(tc.key)
			}
		})
	}

	tok := sign(auth.Grants{Room: "tokroom", Publish: true}, "bob", time.Hour)
	c := dialClient(t, h.addr, nil)
	c.mustPublish(tok)
	h.Participant("tokroom", "bob")
	untouched(t, h, "obs", bgTrack)
	h.SecretsAbsent(obs.StreamKey, tok)
}

// In open mode the key is <room>[/<identity>]; a name that is neither is refused.
func TestOpenModeNames(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	c := dialClient(t, h.addr, nil)
	c.mustPublish("lobby")
	p := h.WaitEvent("join", 10*time.Second, is(sfu.EventParticipantJoined, ""))
	if p.Room.Name != "lobby" || !strings.HasPrefix(p.Participant.Identity, "rtmp-") {
		t.Errorf("joined %+v %+v", p.Room, p.Participant)
	}
	for _, bad := range []string{"../etc", "a/b/c", "", "room/..x"} {
		c := dialClient(t, h.addr, nil)
		if answer, err := c.connect("live"); err != nil || answer != "_result" {
			t.Fatalf("connect: %s %v", answer, err)
		}
		if code, err := c.publish(bad); code != "NetStream.Publish.BadName" {
			t.Errorf("publish %q answered %q %v", bad, code, err)
		}
	}
	// Another app than live is refused at connect.
	c2 := dialClient(t, h.addr, nil)
	if answer, err := c2.connect("vod"); answer != "_error" {
		t.Errorf("connect to app vod answered %q %v", answer, err)
	}
}

// One live publisher per key: a second one is refused (BadName) and the first goes on; on an
// ingest with override the newcomer takes over and the old session ends with
// duplicate_identity, while the ingest stays connected.
func TestOneLivePublisherPerKey(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	plain, err := h.Store.Create(ingest.Definition{Type: ingest.TypeRTMP, Room: "r1", Identity: "cam"}, time.Now())
	must(t, err)
	over, err := h.Store.Create(ingest.Definition{Type: ingest.TypeRTMP, Room: "r2", Identity: "cam", Override: true}, time.Now())
	must(t, err)

	_, first := background(t, h, plain.StreamKey, "r1", "cam")
	second := dialClient(t, h.addr, nil)
	if answer, err := second.connect("live"); err != nil || answer != "_result" {
		t.Fatal(answer, err)
	}
	if code, _ := second.publish(plain.StreamKey); code != "NetStream.Publish.BadName" {
		t.Fatalf("a second publisher on a live key got %q", code)
	}
	e := h.WaitEvent("auth.failed", 5*time.Second, is(sfu.EventAuthFailed, ""))
	if e.Reason != sfu.AuthPermissionDenied || e.Error == nil || e.Error.Code != "stream_key_in_use" {
		t.Errorf("auth.failed %+v %+v", e, e.Error)
	}
	untouched(t, h, "cam", first)

	// Open-mode names are keys too.
	_, _ = background(t, h, "r3/solo", "r3", "solo")
	dup := dialClient(t, h.addr, nil)
	if answer, _ := dup.connect("live"); answer != "_result" {
		t.Fatal(answer)
	}
	if code, _ := dup.publish("r3/solo"); code != "NetStream.Publish.BadName" {
		t.Fatalf("a second publisher on r3/solo got %q", code)
	}

	oldFeeder, _ := background(t, h, over.StreamKey, "r2", "cam")
	oldSID := h.Hub.Room("r2").Participant("cam").SID()
	newer := dialClient(t, h.addr, nil)
	newer.mustPublish(over.StreamKey)
	left := h.WaitEvent("the old session leaves", 10*time.Second, func(e sfu.Event) bool {
		return e.Type == sfu.EventParticipantLeft && e.Participant.SID == oldSID
	})
	if left.Reason != sfu.ReasonDuplicateIdentity {
		t.Errorf("the replaced session left with %q", left.Reason)
	}
	if !oldFeeder.c.waitClosed(5 * time.Second) {
		t.Error("the replaced connection was not closed")
	}
	sfutest.WaitFor(t, "the newcomer in the room", 10*time.Second, func() bool {
		p := h.Hub.Room("r2").Participant("cam")
		return p != nil && p.SID() != oldSID
	})
	startFeeder(t, newer)
	flowing(t, trackOf(t, h.Hub.Room("r2").Participant("cam"), sfu.KindVideo), 10*time.Second)
	var states []string
	for _, e := range h.Events.Events(0) {
		if e.Type == sfu.EventIngestStateChanged && e.Ingest.ID == over.ID {
			states = append(states, e.PrevState+">"+e.Ingest.State)
		}
	}
	if strings.Join(states, " ") != "idle>connected" {
		t.Errorf("ingest states across the takeover: %v", states)
	}
	untouched(t, h, "cam", first)
}

// Deleting an ingest ends its live session (reason removed) before ingest.deleted.
func TestIngestDeleteEndsLiveSession(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ing, err := h.Store.Create(ingest.Definition{Type: ingest.TypeRTMP, Room: "studio"}, time.Now())
	must(t, err)
	f, _ := background(t, h, ing.StreamKey, "studio", ing.ID)
	must(t, h.Store.Delete(ing.ID))
	left := h.WaitEvent("participant.left", 5*time.Second, is(sfu.EventParticipantLeft, ing.ID))
	if left.Reason != sfu.ReasonRemoved {
		t.Errorf("left with %q", left.Reason)
	}
	var seq []string
	for _, e := range h.Events.Events(0) {
		switch e.Type {
		case sfu.EventParticipantLeft, sfu.EventIngestStateChanged, sfu.EventIngestDeleted:
			s := e.Type
			if e.Ingest != nil {
				s += ":" + e.Ingest.State
			}
			seq = append(seq, s)
		}
	}
	want := "ingest.state_changed:connected participant.left ingest.state_changed:disconnected ingest.deleted:disconnected"
	if strings.Join(seq, " ") != want {
		t.Errorf("events %v, want %s", seq, want)
	}
	if !f.c.waitClosed(5 * time.Second) {
		t.Error("the connection stayed open")
	}
	c := dialClient(t, h.addr, nil)
	if answer, _ := c.connect("live"); answer != "_result" {
		t.Fatal(answer)
	}
	if code, _ := c.publish(ing.StreamKey); code != "NetStream.Publish.BadName" {
		t.Errorf("a deleted key got %q (shaped like a stream key, it is never taken as a room name)", code)
	}
	h.SecretsAbsent(ing.StreamKey)
}

// A publisher that stops sending: track.interrupted after rooms.interrupt_after (3 s), then
// after read_timeout (10 s) the session ends with no_media_timeout and the connection is
// closed; another session goes on.
func TestSilentPublisherTimesOut(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	_, bg := background(t, h, "room/busy", "room", "busy")
	f, _ := background(t, h, "room/quiet", "room", "quiet")
	f.pause.Store(true)
	paused := time.Now()
	h.WaitEvent("track.interrupted", 10*time.Second, is(sfu.EventTrackInterrupted, "quiet"))
	e := h.WaitEvent("the timeout", 20*time.Second, is(sfu.EventStreamUnpublished, "quiet"))
	if e.Reason != sfu.ReasonNoMediaTimeout {
		t.Errorf("stream.unpublished reason %q", e.Reason)
	}
	if since := time.Since(paused); since < 9*time.Second {
		t.Errorf("the session ended %v after the media stopped, before read_timeout", since)
	}
	h.WaitEvent("participant.left", 5*time.Second, isReason(sfu.EventParticipantLeft, "quiet", sfu.ReasonNoMediaTimeout))
	if !f.c.waitClosed(5 * time.Second) {
		t.Error("the silent connection stayed open")
	}
	untouched(t, h, "busy", bg)
}

// A connection that drops without unpublishing ends its session with stream.failed; the
// participant leaves with client_disconnected.
func TestConnectionLost(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	_, bg := background(t, h, "room/busy", "room", "busy")
	f, _ := background(t, h, "room/gone", "room", "gone")
	f.close()
	_ = f.c.conn.Close()
	e := h.WaitEvent("stream.failed", 10*time.Second, is(sfu.EventStreamFailed, "gone"))
	if e.Reason != sfu.ReasonClientDisconnected || e.Error == nil || !strings.Contains(e.Error.Message, "before the publisher unpublished") {
		t.Errorf("stream.failed %+v %+v", e, e.Error)
	}
	h.WaitEvent("participant.left", 5*time.Second, isReason(sfu.EventParticipantLeft, "gone", sfu.ReasonClientDisconnected))
	untouched(t, h, "busy", bg)
}

// Malformed media ends that session with stream.failed (reason error) and a logged reason;
// nothing else is touched.
func TestMalformedMediaEndsOnlyItsSession(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	_, bg := background(t, h, "room/busy", "room", "busy")
	f, _ := background(t, h, "room/bad", "room", "bad")
	f.close()
	must(t, f.c.video(100000, rtmptest.AVCTag(false, 1, 0, []byte{0, 0, 0x10, 0, 0x41}))) // a NAL unit longer than the tag
	e := h.WaitEvent("stream.failed", 10*time.Second, is(sfu.EventStreamFailed, "bad"))
	if e.Reason != sfu.ReasonError || e.Error == nil || !strings.Contains(e.Error.Message, "nal unit") {
		t.Errorf("stream.failed %+v %+v", e, e.Error)
	}
	if !f.c.waitClosed(5 * time.Second) {
		t.Error("the connection stayed open")
	}
	if !strings.Contains(h.Logs.String(), "level=WARN msg=\"rtmp publish ended\"") {
		t.Error("the reason was not logged")
	}
	untouched(t, h, "busy", bg)
}

// A room kick ends the publisher's connection.
func TestKickClosesTheConnection(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	f, _ := background(t, h, "room/cam", "room", "cam")
	must(t, h.Hub.Room("room").Kick("cam"))
	if !f.c.waitClosed(5 * time.Second) {
		t.Fatal("the kicked publisher's connection stayed open")
	}
	h.WaitEvent("participant.left", 5*time.Second, isReason(sfu.EventParticipantLeft, "cam", sfu.ReasonRemoved))
	sfutest.WaitFor(t, "the key to be free", 5*time.Second, func() bool { return h.srv.Sessions() == 0 })
}

// Shutdown ends every session with server_shutdown and releases every goroutine.
func TestShutdown(t *testing.T) {
	defer test.CheckRoutines(t)()
	h := newHarness(t, harnessOptions{})
	fa, _ := background(t, h, "room/a", "room", "a")
	fb, _ := background(t, h, "room/b", "room", "b")
	h.Close()
	fa.close()
	fb.close()
	fa.c.close()
	fb.c.close()
	for _, id := range []string{"a", "b"} {
		if !h.Has(isReason(sfu.EventParticipantLeft, id, sfu.ReasonServerShutdown)) {
			t.Errorf("%s did not leave with server_shutdown:\n%s", id, h.EventList())
		}
	}
}

// max_conns_per_ip bounds the connections of one address.
func TestConnectionsPerIP(t *testing.T) {
	h := newHarness(t, harnessOptions{config: func(c *Config) { c.MaxConnsPerIP = 2 }})
	a := dialClient(t, h.addr, nil)
	dialClient(t, h.addr, nil)
	if c, err := tryDial(h.addr, nil); err == nil {
		c.close()
		t.Fatal("a third connection from one address completed its handshake")
	}
	a.close()
	sfutest.WaitFor(t, "the slot to be released", 5*time.Second, func() bool {
		c, err := tryDial(h.addr, nil)
		if err == nil {
			c.close()
		}
		return err == nil
	})
	if !strings.Contains(h.Logs.String(), "too many connections from one address") {
		t.Error("the refusal was not logged")
	}
}

// Sequence headers may change mid-stream: a new SPS (another resolution) goes on in the same
// track (track.updated) and is sent before the following keyframes; a new audio
// configuration replaces the audio track.
func TestSequenceHeaderChangesMidStream(t *testing.T) {
	sps2 := []byte{0x67, 0x4d, 0x40, 0x1e, 0xec, 0xa0, 0x50, 0x17, 0xfc, 0xb8, 0x08, 0x80, 0x00, 0x00, 0x03, 0x00,
		0x80, 0x00, 0x00, 0x1e, 0x07, 0x8b, 0x16, 0xcb} // 640x360, Main
	pps2 := []byte{0x68, 0xeb, 0xe3, 0xcb, 0x20}
	h := newHarness(t, harnessOptions{})
	c := dialClient(t, h.addr, nil)
	c.mustPublish("switch/cam")
	must(t, c.video(0, rtmptest.AVCTag(true, 0, 0, rtmptest.AVCConfigRecord(rtmptest.SPS, rtmptest.PPS))))
	must(t, c.audio(0, rtmptest.AACTag(0, rtmptest.ASC)))
	p := h.Participant("switch", "cam")
	video := trackOf(t, p, sfu.KindVideo)
	audio := trackOf(t, p, sfu.KindAudio)
	s := &sink{}
	sub, err := video.Subscribe(s, sfu.SubscribeOptions{QueueSize: 4096})
	must(t, err)
	defer sub.Close()
	must(t, c.video(0, rtmptest.AVCTag(true, 1, 0, rtmptest.LengthPrefixed(rtmptest.FakeIDR(500)))))
	must(t, c.video(33, rtmptest.AVCTag(true, 0, 0, rtmptest.AVCConfigRecord(sps2, pps2))))
	must(t, c.video(33, rtmptest.AVCTag(true, 1, 0, rtmptest.LengthPrefixed(rtmptest.FakeIDR(500)))))
	must(t, c.audio(40, rtmptest.AACTag(0, []byte{0x12, 0x10}))) // AAC-LC 44.1 kHz stereo
	sfutest.WaitFor(t, "the new resolution", 10*time.Second, func() bool { w, hgt := video.Size(); return w == 640 && hgt == 360 })
	if !h.Has(is(sfu.EventTrackUpdated, "cam")) {
		t.Error("no track.updated")
	}
	sfutest.WaitFor(t, "both keyframes", 10*time.Second, func() bool {
		n := 0
		for _, pk := range s.all() {
			if pk.Keyframe {
				n++
			}
		}
		return n == 2
	})
	var sizes []int
	for _, pk := range s.all() {
		if w, _, ok := sfu.VideoSize(sfu.CodecH264, pk.Payload); ok {
			sizes = append(sizes, w)
		}
	}
	if len(sizes) != 2 || sizes[0] != 320 || sizes[1] != 640 {
		t.Errorf("SPS widths before the keyframes: %v, want [320 640]", sizes)
	}
	if video.Closed() {
		t.Error("the video track was replaced; it should go on")
	}
	sfutest.WaitFor(t, "the new audio track", 10*time.Second, func() bool { return audio.Closed() })
	a2 := trackOf(t, p, sfu.KindAudio)
	if a2.Codec().ClockRate != 44100 {
		t.Errorf("new audio track %+v", a2.Codec())
	}
}

// TestParamsSize reads the resolution from the parameter sets of a configuration record (media.VideoSize).
func TestParamsSize(t *testing.T) {
	cfg, err := rtmpproto.ParseAVCC(rtmptest.AVCConfigRecord(rtmptest.SPS, rtmptest.PPS))
	if err != nil {
		t.Fatal(err)
	}
	if w, h := media.ParamsSize(sfu.CodecH264, cfg.Params); w != 320 || h != 240 {
		t.Fatalf("size %dx%d", w, h)
	}
}

// The publish stream's RTMP figures: the bytes read from the connection and the frames that
// could not be used (here one before the sequence header).
func TestStreamStatsCountBytesAndDroppedFrames(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	defer h.Close()
	c := dialClient(t, h.addr, nil)
	defer c.close()
	c.mustPublish("studio/cam")
	must(t, c.video(0, rtmptest.AVCTag(true, 1, 0, rtmptest.LengthPrefixed(rtmptest.FakeIDR(3000))))) // no configuration yet
	f := startFeeder(t, c)
	var st *sfu.StreamInfo
	sfutest.WaitFor(t, "the stream's figures", 10*time.Second, func() bool {
		streams := h.Participant("studio", "cam").Streams()
		if len(streams) != 1 {
			return false
		}
		st = streams[0].Info(true)
		return st.Bytes != nil && *st.Bytes > 30000 && f.sent.Load() > 10
	})
	if st.DroppedFrames == nil || *st.DroppedFrames != 1 {
		t.Errorf("dropped frames %v, want 1", st.DroppedFrames)
	}
	if st.Protocol != sfu.ProtocolRTMP || st.PacketsLost != nil || st.RTTMs != nil {
		t.Errorf("stream %+v: RTMP has no loss or round trip figures", st)
	}
}
