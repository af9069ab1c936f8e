package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/egress/egresstest"
	"github.com/sluice-media/sluice/recorder"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
	"github.com/sluice-media/sluice/webhooks"
)

// seenTypes collects the event types the end-to-end tests of this package saw in a daemon's
// log; TestMain checks them against the catalogue after a full run.
var seenTypes = struct {
	sync.Mutex
	m map[string]bool
}{m: map[string]bool{}}

func noteSeen(evs []sfu.Event) {
	seenTypes.Lock()
	defer seenTypes.Unlock()
	for _, ev := range evs {
		seenTypes.m[ev.Type] = true
	}
}

// uncoveredTypes returns the catalogue types no test saw, and the pending ones (built by
// other issues) with their issue.
func uncoveredTypes() (missing, pending []string) {
	seenTypes.Lock()
	defer seenTypes.Unlock()
	for _, typ := range sfutest.Catalogue {
		if seenTypes.m[typ] {
			continue
		}
		if n, ok := sfutest.Pending[typ]; ok {
			pending = append(pending, fmt.Sprintf("%s (issue %d)", typ, n))
			continue
		}
		missing = append(missing, typ)
	}
	return missing, pending
}

// describe is an event's type with the key fields the scenario asserts.
func describe(ev sfu.Event) string {
	s := ev.Type
	switch {
	case ev.Recording != nil:
		s += fmt.Sprintf(" %s files=%d", ev.Recording.Status, len(ev.Recording.Files))
	case ev.Broadcast != nil:
		var st []string
		for _, d := range ev.Broadcast.Destinations {
			st = append(st, d.Status)
		}
		s += " " + strings.Join(st, ",")
	case ev.Stream != nil:
		s += fmt.Sprintf(" %s tracks=%d", ev.Stream.Protocol, len(ev.Stream.Tracks))
	case ev.Track != nil:
		s += " " + ev.Track.Kind
	}
	if ev.Reason != "" {
		s += " (" + ev.Reason + ")"
	}
	return s
}

// sequence describes the events pick keeps, in order; runs of the same track event (two
// tracks published together, whose order is the publisher's) are sorted.
func sequence(evs []sfu.Event, pick func(sfu.Event) bool) []string {
	var out []string
	start := 0
	var lastType string
	for _, ev := range evs {
		if ev.Type == sfu.EventStreamStats || ev.Type == sfu.EventParticipantQuality || !pick(ev) {
			continue // figures that follow the link, at any time
		}
		if ev.Type != lastType || !strings.HasPrefix(ev.Type, "track.") {
			sort.Strings(out[start:])
			start, lastType = len(out), ev.Type
		}
		out = append(out, describe(ev))
	}
	sort.Strings(out[start:])
	return out
}

func expectSequence(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got %q\nwant %q", what, got, want)
	}
}

// waitLog waits until the log holds an event ok accepts, and returns the log.
func waitLog(t *testing.T, d *daemonProc, what string, ok func(sfu.Event) bool) (sfu.Event, []sfu.Event) {
	t.Helper()
	var found sfu.Event
	var all []sfu.Event
	sfutest.WaitFor(t, what, e2eWait, func() bool {
		all = logEvents(t, d.URL)
		for _, ev := range all {
			if ok(ev) {
				found = ev
				return true
			}
		}
		return false
	})
	return found, all
}

func typeIs(typ string, and func(sfu.Event) bool) func(sfu.Event) bool {
	return func(ev sfu.Event) bool { return ev.Type == typ && (and == nil || and(ev)) }
}

// The whole life of a show, as a backend sees it: an RTMP publisher (ffmpeg) and a WHIP one
// (pion), a WHEP viewer, a mute and an unmute, metadata updates, a recording started, paused,
// resumed and stopped, a broadcast to two platforms (nginx-rtmp) one of which dies, the RTMP
// publisher killed, and the daemon killed with SIGKILL and restarted. Each object's events are
// asserted in their exact order with their key fields; every webhook's signature verifies, and
// the webhooks and the status stream (`sluice status -f -o json`) carry the same events, in
// the same order, as the log.
func TestEventScenario(t *testing.T) {
	sfutest.RequireTool(t, "ffmpeg")
	good := egresstest.StartPlatform(t, egresstest.PlatformOptions{})
	dying := egresstest.StartPlatform(t, egresstest.PlatformOptions{})
	secret := webhooks.NewSecret()
	rxAddr := fmt.Sprintf("127.0.0.1:%d", sfutest.FreeTCPPort(t))
	rx := newHookReceiver(secret)
	rx.listen(t, rxAddr)
	d := startDaemon(t, fmt.Sprintf(`webhooks:
  endpoints: [{id: rx, url: "http://%s/hook", secret: %q}]
broadcast: { grace: 2s, max_retry_duration: 2s }
`, rxAddr, secret))

	// the status stream, from the first event on, across the restart
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	follower := startCLI(ctx, pw, io.Discard, "--server", d.URL, "status", "-f", "-o", "json", "--since", "0")
	var followed []sfu.Event
	var fmu sync.Mutex
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var ev sfu.Event
			if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.ID != "" {
				fmu.Lock()
				followed = append(followed, ev)
				fmu.Unlock()
			}
		}
	}()

	// 1. RTMP publish: stream.publishing lists audio and video together
	rtmpCmd, _, rtmpExited := ffmpegOBS(t, fmt.Sprintf("rtmp://127.0.0.1:%d/live/show", d.RTMPPort), 300, 0)
	rtmpPub, _ := waitLog(t, d, "the RTMP stream", typeIs(sfu.EventStreamPublishing, func(ev sfu.Event) bool { return ev.Stream.Protocol == sfu.ProtocolRTMP }))
	rtmp := *rtmpPub.Participant
	// 2. WHIP publish
	newWHIPPublisher(t, d.URL+"/whip/show")
	whipPub, _ := waitLog(t, d, "the WHIP stream", typeIs(sfu.EventStreamPublishing, func(ev sfu.Event) bool { return ev.Stream.Protocol == sfu.ProtocolWHIP }))
	whip := *whipPub.Participant
	// 3. a WHEP viewer (of the main publisher: the RTMP one)
	playWHEP(t, d.URL+"/whep/show")
	viewerPlay, all := waitLog(t, d, "the WHEP viewer", typeIs(sfu.EventStreamPlaying, nil))
	viewer := *viewerPlay.Participant
	var videoSID string
	for _, ev := range all {
		if ev.Type == sfu.EventTrackPublished && ev.Participant.SID == rtmp.SID && ev.Track.Kind == "video" {
			videoSID = ev.Track.SID
		}
	}
	// 4. mute and unmute; 5. metadata
	for _, args := range [][]string{
		{"rooms", "mute", "show", rtmp.Identity, videoSID},
		{"rooms", "mute", "show", rtmp.Identity, videoSID, "--unmute"},
		{"rooms", "update", "show", "--metadata", `{"act":2}`},
		{"rooms", "update", "show", rtmp.Identity, "--name", "OBS studio", "--metadata", `{"role":"host"}`},
	} {
		if out, err := d.cli(args...); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	// 6. record start, pause, resume, stop
	out, err := d.cli("record", "start", "--room", "show", "--participant", rtmp.Identity, "-o", "json")
	if err != nil {
		t.Fatalf("record start: %v\n%s", err, out)
	}
	recID := startedRecording(t, out)
	isRec := func(ev sfu.Event) bool { return ev.Recording != nil && ev.Recording.ID == recID }
	waitLog(t, d, "recording.started", typeIs(sfu.EventRecordingStarted, isRec))
	time.Sleep(2 * time.Second)
	for _, verb := range []string{"pause", "resume"} {
		if out, err := d.cli("record", verb, recID); err != nil {
			t.Fatalf("record %s: %v\n%s", verb, err, out)
		}
		time.Sleep(2 * time.Second)
	}
	d.waitRecording(t, recID, e2eWait, func(r recorder.Recording) bool { return len(r.Files) == 2 })
	if out, err := d.cli("record", "stop", recID); err != nil {
		t.Fatalf("record stop: %v\n%s", err, out)
	}
	// 7. a broadcast of the RTMP publisher to two platforms; one dies for good
	b := startBroadcast(t, d, "--room", "show", "--participant", rtmp.Identity, "--url", good.URL(keyMain), "--url", dying.URL(keyDead))
	sfutest.WaitFor(t, "both destinations active", e2eWait, func() bool {
		s := showBroadcast(t, d, b.ID)
		return len(s.Destinations) == 2 && s.Destinations[0].Status == "active" && s.Destinations[1].Status == "active"
	})
	dying.Kill()
	isBC := func(ev sfu.Event) bool { return ev.Broadcast != nil && ev.Broadcast.ID == b.ID }
	waitLog(t, d, "the dead destination failed", typeIs(sfu.EventBroadcastUpdated, func(ev sfu.Event) bool {
		return isBC(ev) && ev.Broadcast.Destinations[1].Status == "failed"
	}))
	// 8. the RTMP publisher is killed: its stream fails, the broadcast ends with its source
	_ = rtmpCmd.Process.Kill()
	<-rtmpExited
	waitLog(t, d, "broadcast.ended", typeIs(sfu.EventBroadcastEnded, isBC))
	// 9. SIGKILL and restart: what was open gets its terminal events
	d.kill()
	d.start()
	_, all = waitLog(t, d, "room.finished after the restart", typeIs(sfu.EventRoomFinished, nil))
	noteSeen(all)

	rtmpStream := func(ev sfu.Event) bool { return ev.Participant != nil && ev.Participant.SID == rtmp.SID }
	expectSequence(t, "the RTMP publisher", sequence(all, rtmpStream), []string{
		"participant.joined", "track.published audio", "track.published video", "stream.publishing rtmp tracks=2",
		"track.muted video", "track.unmuted video", "participant.updated",
		"track.unpublished audio (client_disconnected)", "track.unpublished video (client_disconnected)",
		"stream.failed rtmp tracks=2 (client_disconnected)", "participant.left (client_disconnected)",
	})
	expectSequence(t, "the WHIP publisher", sequence(all, func(ev sfu.Event) bool { return ev.Participant != nil && ev.Participant.SID == whip.SID }), []string{
		"participant.joined", "track.published audio", "track.published video", "stream.publishing whip tracks=2",
		"stream.unpublished whip tracks=2 (error)", "track.unpublished audio (error)", "track.unpublished video (error)", "participant.left (error)",
	})
	// the viewer, until the publisher it watched was killed (what it follows then is the
	// follower's business), and its end after the restart
	viewerSeq := sequence(all, func(ev sfu.Event) bool { return ev.Participant != nil && ev.Participant.SID == viewer.SID })
	if len(viewerSeq) < 5 || viewerSeq[len(viewerSeq)-1] != "participant.left (error)" {
		t.Errorf("the WHEP viewer: %q", viewerSeq)
	} else {
		expectSequence(t, "the WHEP viewer", viewerSeq[:4], []string{
			"participant.joined", "stream.playing whep tracks=0", "track.subscribed audio", "track.subscribed video",
		})
	}
	expectSequence(t, "the recording", sequence(all, isRec), []string{
		"recording.updated starting files=0 (requested)", "recording.started active files=1 (requested)",
		"recording.updated paused files=1 (paused)", "recording.updated active files=1 (resumed)",
		"recording.updated ending files=2 (stopped)", "recording.ended complete files=2 (stopped)",
	})
	// one event per destination change; the dying one is retried (one event per try) until
	// max_retry_duration, and which destination comes up first is the platforms' race
	bcSeq := slices.Compact(sequence(all, isBC))
	if len(bcSeq) > 0 && bcSeq[0] == "broadcast.started connecting,active" {
		bcSeq[0] = "broadcast.started active,connecting"
	}
	expectSequence(t, "the broadcast", bcSeq, []string{
		"broadcast.started active,connecting", "broadcast.updated active,active",
		"broadcast.updated active,reconnecting", "broadcast.updated active,failed",
		"broadcast.ended ended,failed (source_ended)",
	})
	expectSequence(t, "the room", sequence(all, func(ev sfu.Event) bool { return strings.HasPrefix(ev.Type, "room.") }), []string{
		"room.started", "room.updated", "room.finished (error)",
	})
	expectSequence(t, "the daemon", sequence(all, func(ev sfu.Event) bool { return strings.HasPrefix(ev.Type, "server.") }), []string{
		"server.started", "server.started",
	})

	// every webhook verified, and the webhooks, the status stream and the log agree
	var want []sfu.Event
	for _, ev := range all {
		if ev.Type != sfu.EventStreamStats {
			want = append(want, ev)
		}
	}
	sfutest.WaitFor(t, "every event delivered and followed", e2eWait, func() bool {
		ids := make([]string, len(want))
		for i, ev := range want {
			ids[i] = ev.ID
		}
		fmu.Lock()
		n := len(followed)
		fmu.Unlock()
		return rx.has(ids) == 0 && n >= len(all)
	})
	cancel()
	follower.wait()
	_ = pw.Close()
	<-readDone
	rx.mu.Lock()
	hooks := append([]sfu.Event(nil), rx.events...)
	bad := rx.bad
	rx.mu.Unlock()
	if bad != 0 {
		t.Errorf("%d webhooks failed signature verification", bad)
	}
	followedIDs := ids(followed)
	if !slices.Equal(followedIDs[:len(all)], ids(all)) {
		t.Errorf("the status stream differs from the log:\n%v\n%v", followedIDs, ids(all))
	}
	// per room (the order webhooks promise), the same ids in the same order, each once or
	// repeated (at least once: a delivery cut by the kill may come again)
	for _, room := range []string{"", "show"} {
		var got, exp []string
		seen := map[string]bool{}
		for _, ev := range hooks {
			if ev.RoomName() == room && !seen[ev.ID] {
				seen[ev.ID] = true
				got = append(got, ev.ID)
			}
		}
		for _, ev := range want {
			if ev.RoomName() == room {
				exp = append(exp, ev.ID)
			}
		}
		if !slices.Equal(got, exp) {
			t.Errorf("room %q: webhooks %v\nlog %v", room, got, exp)
		}
	}
	t.Logf("%d events in the log, %d webhooks (%d distinct), %d followed", len(all), len(hooks), len(want), len(followed))
}

func ids(evs []sfu.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.ID
	}
	return out
}
