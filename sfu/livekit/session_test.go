package livekit

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	lkp "github.com/livekit/protocol/livekit"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// eventTypes lists the types of the recorded events about identity.
func (e *env) eventTypes(identity string) []string {
	var out []string
	for _, ev := range e.events.Events(0) {
		if ev.Participant != nil && ev.Participant.Identity == identity {
			out = append(out, ev.Type)
		}
	}
	return out
}

func count(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}

// resume reconnects c's signalling as livekit-client does after a drop: /rtc with
// reconnect=1 and its sid, then (a publisher) an ICE-restart offer.
func (c *lkClient) resume(restartPublisher bool) {
	c.t.Helper()
	c.mu.Lock()
	c.got = nil
	c.mu.Unlock()
	c.attach(c.e.dial(c.t, c.identity, url.Values{"reconnect": {"1"}, "sid": {c.sid()}, "auto_subscribe": {"1"}}))
	first := c.waitFor("the reconnect response", func(*lkp.SignalResponse) bool { return true })
	if first.GetReconnect() == nil {
		c.t.Fatalf("%s: the first message after resuming is %T, want a ReconnectResponse", c.identity, first.GetMessage())
	}
	if restartPublisher {
		c.offer(true)
	}
}

func ufrag(sdp string) string {
	for _, l := range strings.Split(sdp, "\n") {
		if strings.HasPrefix(l, "a=ice-ufrag:") {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// A client whose WebSocket drops resumes its session (reconnect=1, its sid): it gets a
// ReconnectResponse, an ICE restart of its subscriber connection, restarts its publisher's, and
// media flows both ways again, with no participant.left/joined flicker.
func TestResume(t *testing.T) {
	e := newEnv(t)
	alice := e.connect(t, "alice", true, "1")
	bob := e.connect(t, "bob", true, "1")
	bob.waitMedia(alice, 25)
	alice.waitMedia(bob, 25)
	before := ufrag(bob.sub.RemoteDescription().SDP)

	// bob (a subscriber and publisher) loses his WebSocket, then resumes.
	bob.dropSignal()
	time.Sleep(200 * time.Millisecond)
	bob.resume(true)
	offer := bob.waitFor("an ICE-restart offer", func(m *lkp.SignalResponse) bool {
		return m.GetOffer() != nil && ufrag(m.GetOffer().GetSdp()) != before
	})
	if offer == nil {
		return
	}
	bob.waitFor("the publisher answer", func(m *lkp.SignalResponse) bool { return m.GetAnswer() != nil })
	bob.waitMedia(alice, 25)
	alice.waitMedia(bob, 25)
	// The resumed client gets the room again: alice with her track.
	bob.waitFor("alice's participant update", func(m *lkp.SignalResponse) bool {
		for _, p := range m.GetUpdate().GetParticipants() {
			if p.GetIdentity() == "alice" && len(p.GetTracks()) == 1 {
				return true
			}
		}
		return false
	})

	// Another identity cannot take bob's session over.
	if _, err := e.tryDial("mallory", url.Values{"reconnect": {"1"}, "sid": {bob.sid()}}); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("resuming bob's session with mallory's token: %v, want a 403", err)
	}

	// A resume naming a session that is gone is told to reconnect fully.
	conn := e.dial(t, "carol", url.Values{"reconnect": {"1"}, "sid": {"PA_gone"}})
	carol := &lkClient{t: t, e: e, identity: "carol"}
	carol.attach(conn)
	leave := carol.waitFor("a leave", func(m *lkp.SignalResponse) bool { return m.GetLeave() != nil }).GetLeave()
	if leave.GetAction() != lkp.LeaveRequest_RECONNECT {
		t.Errorf("resuming an unknown session: leave %v, want action RECONNECT", leave)
	}
	carol.readers.Wait()

	for _, id := range []string{"alice", "bob"} {
		if ev := e.eventTypes(id); count(ev, sfu.EventParticipantJoined) != 1 || count(ev, sfu.EventParticipantLeft) != 0 {
			t.Errorf("%s's events %v: want one participant.joined and no participant.left", id, ev)
		}
	}
}

// Full reconnect: the client joins anew with the same identity; its old session ends as a
// duplicate and the new one gets the media again.
func TestFullReconnect(t *testing.T) {
	e := newEnv(t)
	alice := e.connect(t, "alice", true, "1")
	bob := e.connect(t, "bob", false, "1")
	bob.waitMedia(alice, 25)
	bob.dropSignal()
	bob.close()
	again := e.connect(t, "bob", false, "1")
	again.waitMedia(alice, 25)
	sfutest.WaitFor(t, "one session per participant", 5*time.Second, func() bool { return e.srv.Sessions() == 2 })
}

// A session that is not resumed within the window ends: the participant leaves with
// reconnect_timeout.
func TestResumeWindowPasses(t *testing.T) {
	e := newEnv(t)
	e.srv.ReconnectWindow = 300 * time.Millisecond
	bob := e.connect(t, "bob", false, "1")
	bob.dropSignal()
	sfutest.WaitFor(t, "bob leaving", 5*time.Second, func() bool { return e.srv.Sessions() == 0 })
	for _, ev := range e.events.Events(0) {
		if ev.Type == sfu.EventParticipantLeft && ev.Reason != sfu.ReasonReconnectTimeout {
			t.Errorf("participant.left with reason %q, want %q", ev.Reason, sfu.ReasonReconnectTimeout)
		}
	}
}

// apiCall sends a /v1 request and returns its status.
func (e *env) apiCall(t *testing.T, method, path, body string) int {
	t.Helper()
	req, err := http.NewRequest(method, e.http+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	return res.StatusCode
}

// Room metadata set through /v1 reaches clients as a RoomUpdate (the SDK's
// RoomMetadataChanged); removing a participant through /v1 gives it a leave with reason
// PARTICIPANT_REMOVED, and the others see it go.
func TestServerSideRoomLife(t *testing.T) {
	e := newEnv(t)
	alice := e.connect(t, "alice", true, "1")
	bob := e.connect(t, "bob", false, "1")
	bob.waitMedia(alice, 10)

	if st := e.apiCall(t, "PATCH", "/v1/rooms/meet", `{"metadata":"{\"topic\":\"review\"}"}`); st != http.StatusOK {
		t.Fatalf("PATCH /v1/rooms/meet: %d", st)
	}
	for _, c := range []*lkClient{alice, bob} {
		c.waitFor("the room metadata", func(m *lkp.SignalResponse) bool {
			return m.GetRoomUpdate().GetRoom().GetMetadata() == `{"topic":"review"}`
		})
	}

	// Data from the server: to everyone, then to bob only.
	if st := e.apiCall(t, "POST", "/v1/rooms/meet/data", `{"data":"to all","topic":"news"}`); st != http.StatusOK {
		t.Fatalf("POST data: %d", st)
	}
	if st := e.apiCall(t, "POST", "/v1/rooms/meet/data", `{"data":"to bob","destination_identities":["bob"]}`); st != http.StatusOK {
		t.Fatalf("POST data: %d", st)
	}
	if st := e.apiCall(t, "POST", "/v1/rooms/meet/data", `{"data":"`+strings.Repeat("x", sfu.MaxDataPayload+1)+`"}`); st != http.StatusRequestEntityTooLarge {
		t.Errorf("POST oversized data: %d, want 413", st)
	}
	bob.waitData("to all", "news")
	bob.waitData("to bob", "")
	alice.waitData("to all", "news")
	time.Sleep(200 * time.Millisecond)
	if alice.hasData("to bob") {
		t.Error("alice received data addressed to bob")
	}

	if st := e.apiCall(t, "DELETE", "/v1/rooms/meet/participants/bob", ""); st != http.StatusNoContent {
		t.Fatalf("DELETE bob: %d", st)
	}
	leave := bob.waitFor("a leave", func(m *lkp.SignalResponse) bool { return m.GetLeave() != nil }).GetLeave()
	if leave.GetReason() != lkp.DisconnectReason_PARTICIPANT_REMOVED || leave.GetAction() != lkp.LeaveRequest_DISCONNECT {
		t.Errorf("bob's leave %v: want PARTICIPANT_REMOVED, DISCONNECT", leave)
	}
	alice.waitFor("bob's disconnect", func(m *lkp.SignalResponse) bool {
		for _, p := range m.GetUpdate().GetParticipants() {
			if p.GetIdentity() == "bob" && p.GetState() == lkp.ParticipantInfo_DISCONNECTED {
				return true
			}
		}
		return false
	})
}

func (c *lkClient) hasData(payload string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range c.data {
		if string(d.GetUser().GetPayload()) == payload {
			return true
		}
	}
	return false
}

// waitData waits for a user packet with payload and topic.
func (c *lkClient) waitData(payload, topic string) {
	c.t.Helper()
	sfutest.WaitFor(c.t, c.identity+" receiving "+payload, 10*time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, d := range c.data {
			if string(d.GetUser().GetPayload()) == payload && d.GetUser().GetTopic() == topic {
				return true
			}
		}
		return false
	})
}

// trackOf waits until c knows a track of identity and returns its sid.
func (c *lkClient) trackOf(identity string) string {
	c.t.Helper()
	sid := ""
	c.waitFor(identity+"'s track", func(m *lkp.SignalResponse) bool {
		ps := m.GetUpdate().GetParticipants()
		if j := m.GetJoin(); j != nil {
			ps = j.GetOtherParticipants()
		}
		for _, p := range ps {
			if p.GetIdentity() == identity && len(p.GetTracks()) > 0 {
				sid = p.GetTracks()[0].GetSid()
				return true
			}
		}
		return false
	})
	return sid
}

func (e *env) subscriptions(identity string) int {
	r := e.hub.Room("meet")
	if r == nil || r.Participant(identity) == nil {
		return -1
	}
	return len(r.Participant(identity).Subscriptions())
}

// Without auto-subscribe a client receives what it asks for (UpdateSubscription), a track it
// disables (UpdateTrackSettings) pauses, and an unknown track is answered SE_TRACK_NOTFOUND.
func TestExplicitSubscription(t *testing.T) {
	e := newEnv(t)
	alice := e.connect(t, "alice", true, "1")
	bob := e.connect(t, "bob", false, "0")
	sid := bob.trackOf("alice")
	if n := e.subscriptions("bob"); n != 0 {
		t.Fatalf("bob has %d subscriptions without asking", n)
	}

	bob.request(&lkp.SignalRequest{Message: &lkp.SignalRequest_Subscription{Subscription: &lkp.UpdateSubscription{
		ParticipantTracks: []*lkp.ParticipantTracks{{ParticipantSid: alice.sid(), TrackSids: []string{sid}}}, Subscribe: true,
	}}})
	bob.waitMedia(alice, 25)

	bob.request(&lkp.SignalRequest{Message: &lkp.SignalRequest_Subscription{Subscription: &lkp.UpdateSubscription{
		TrackSids: []string{"TR_nothere"}, Subscribe: true,
	}}})
	bob.waitFor("SE_TRACK_NOTFOUND", func(m *lkp.SignalResponse) bool {
		r := m.GetSubscriptionResponse()
		return r.GetTrackSid() == "TR_nothere" && r.GetErr() == lkp.SubscriptionError_SE_TRACK_NOTFOUND
	})

	// Disabled: the packets stop (give those in flight time to land), then resume.
	bob.request(&lkp.SignalRequest{Message: &lkp.SignalRequest_TrackSetting{TrackSetting: &lkp.UpdateTrackSettings{
		TrackSids: []string{sid}, Disabled: true,
	}}})
	time.Sleep(300 * time.Millisecond)
	paused := bob.received(alice.sid())
	time.Sleep(500 * time.Millisecond)
	if n := bob.received(alice.sid()); n > paused+2 {
		t.Errorf("a disabled track kept flowing: %d packets after the pause", n-paused)
	}
	bob.request(&lkp.SignalRequest{Message: &lkp.SignalRequest_TrackSetting{TrackSetting: &lkp.UpdateTrackSettings{
		TrackSids: []string{sid}, Disabled: false,
	}}})
	bob.waitMedia(alice, 25)

	bob.request(&lkp.SignalRequest{Message: &lkp.SignalRequest_Subscription{Subscription: &lkp.UpdateSubscription{
		TrackSids: []string{sid}, Subscribe: false,
	}}})
	sfutest.WaitFor(t, "bob unsubscribed", 5*time.Second, func() bool { return e.subscriptions("bob") == 0 })
}
