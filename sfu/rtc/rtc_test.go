package rtc

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/pion/transport/v4/test"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
)

// One pion WHIP publisher, 20 pion WHEP viewers and one viewer that never reads: every reading
// viewer gets the video from a keyframe on and the audio, at the publisher's rate.
func TestWHIPToTwentyWHEPViewers(t *testing.T) {
	defer test.CheckRoutines(t)()
	h := newHarness(t, auth.Config{})
	defer h.close()
	client := clientAPI(t)

	pub := publish(t, client, h.http.URL+"/whip/lobby", "")
	defer pub.close()
	waitUntil(t, "the publisher's tracks", 10*time.Second, func() bool {
		r := h.hub.Room("lobby")
		return r != nil && r.MainPublisher() != nil && len(r.MainPublisher().Tracks()) == 2
	})

	stuck := play(t, client, h.http.URL+"/whep/lobby", "", false)
	const n = 20
	viewers := make([]*testViewer, n)
	for i := range viewers {
		viewers[i] = play(t, client, h.http.URL+"/whep/lobby", "", true)
	}
	waitUntil(t, "every viewer receiving video", 20*time.Second, func() bool {
		for _, v := range viewers {
			if v.video.Load() == 0 || v.audio.Load() == 0 {
				return false
			}
		}
		return true
	})
	// Let the stream run, then judge each viewer by what it is missing: a viewer that keeps up
	// has a continuous sequence, whatever the machine's load does to counts in a time window.
	startSent := pub.videoSent.Load()
	time.Sleep(3 * time.Second)
	sent := pub.videoSent.Load() - startSent
	if sent < 60 {
		t.Fatalf("publisher sent only %d packets in 3 s", sent)
	}
	for i, v := range viewers {
		loss, span := v.videoLoss()
		if loss > 0.01 || span < sent {
			t.Errorf("viewer %d: %.2f%% of video missing over %d packets (publisher sent %d in the last 3 s)", i, loss*100, span, sent)
		}
		if v.firstKeyframe.Load() != 1 {
			t.Errorf("viewer %d: the first video packet was not a keyframe", i)
		}
	}
	status := h.hub.Room("lobby").Status()
	if len(status.Participants) != n+2 {
		t.Errorf("status lists %d participants, want %d", len(status.Participants), n+2)
	}

	for _, v := range viewers {
		v.close()
	}
	stuck.close()
	pub.close()
	waitUntil(t, "everyone to leave", 10*time.Second, func() bool {
		r := h.hub.Room("lobby")
		return r == nil || len(r.Participants()) == 0
	})
	waitUntil(t, "sessions to end", 10*time.Second, func() bool { return h.srv.Sessions() == 0 })
	checkScenarioEvents(t, h.events.Events(0))
}

// checkScenarioEvents asserts the order and envelope of the publisher's and one viewer's events.
func checkScenarioEvents(t *testing.T, evs []sfu.Event) {
	t.Helper()
	var pubSID string
	for _, e := range evs {
		if e.Type == sfu.EventParticipantJoined && e.Participant.Kind == sfu.ParticipantWHIP {
			pubSID = e.Participant.SID
			break
		}
	}
	var viewerSID string
	for _, e := range evs {
		if e.Type == sfu.EventStreamPlaying {
			viewerSID = e.Participant.SID
			break
		}
	}
	if pubSID == "" || viewerSID == "" {
		t.Fatalf("no publisher or viewer joined: %v", eventTypes(evs))
	}
	of := func(sid string) []string {
		var out []string
		for _, e := range evs {
			if e.Participant != nil && e.Participant.SID == sid && e.Type != sfu.EventStreamStats && e.Type != sfu.EventParticipantQuality {
				out = append(out, e.Type)
			}
		}
		return out
	}
	pubWant := []string{"participant.joined", "track.published", "track.published", "stream.publishing",
		"track.unpublished", "track.unpublished", "stream.unpublished", "participant.left"}
	if got := of(pubSID); !slices.Equal(got, pubWant) {
		t.Errorf("publisher events:\n got %v\nwant %v", got, pubWant)
	}
	viewWant := []string{"participant.joined", "stream.playing", "track.subscribed", "track.subscribed",
		"track.unsubscribed", "track.unsubscribed", "stream.stopped", "participant.left"}
	if got := of(viewerSID); !slices.Equal(got, viewWant) {
		t.Errorf("viewer events:\n got %v\nwant %v", got, viewWant)
	}
	var last uint64
	for _, e := range evs {
		if e.Seq <= last || e.ID == "" || e.Time.IsZero() {
			t.Fatalf("bad envelope or order at %+v", e)
		}
		last = e.Seq
		if e.Type == sfu.EventParticipantLeft && e.Reason != sfu.ReasonClientDisconnected {
			t.Errorf("participant.left reason %q", e.Reason)
		}
	}
	if evs[0].Type != sfu.EventRoomStarted {
		t.Errorf("first event %s", evs[0].Type)
	}
}

func eventTypes(evs []sfu.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = fmt.Sprintf("%d:%s", e.Seq, e.Type)
	}
	return out
}
