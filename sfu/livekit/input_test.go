package livekit

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	lkp "github.com/livekit/protocol/livekit"
	"github.com/pion/webrtc/v4"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

func mustMarshal(t *testing.T, m *lkp.SignalRequest) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Bad input ends the sender's session with a clear close (a leave, then the WebSocket close
// status and text) while the rest of the room goes on; harmless requests out of order are
// ignored.
func TestMalformedInput(t *testing.T) {
	e := newEnv(t)
	alice := e.connect(t, "alice", true, "1")
	bob := e.connect(t, "bob", false, "1")
	bob.waitMedia(alice, 10)

	offerAsAnswer := mustMarshal(t, &lkp.SignalRequest{Message: &lkp.SignalRequest_Offer{Offer: &lkp.SessionDescription{Type: "answer", Sdp: "v=0"}}})
	badTrickle := mustMarshal(t, &lkp.SignalRequest{Message: &lkp.SignalRequest_Trickle{Trickle: &lkp.TrickleRequest{CandidateInit: "{not json"}}})
	garbageSDP := mustMarshal(t, &lkp.SignalRequest{Message: &lkp.SignalRequest_Offer{Offer: &lkp.SessionDescription{Type: "offer", Sdp: "no sdp at all"}}})
	for i, c := range []struct {
		name   string
		typ    websocket.MessageType
		data   []byte
		status websocket.StatusCode
		text   string
	}{
		{"not protobuf", websocket.MessageBinary, []byte{0xff, 0xff, 0xff, 0xff, 0x0f}, websocket.StatusPolicyViolation, "malformed signal request"},
		{"not JSON", websocket.MessageText, []byte("{hello"), websocket.StatusPolicyViolation, "malformed signal request"},
		{"empty request", websocket.MessageBinary, nil, websocket.StatusPolicyViolation, "empty signal request"},
		{"oversized", websocket.MessageBinary, make([]byte, MaxMessage+1), websocket.StatusMessageTooBig, ""},
		{"offer typed answer", websocket.MessageBinary, offerAsAnswer, websocket.StatusPolicyViolation, "publisher offer has type"},
		{"bad trickle", websocket.MessageBinary, badTrickle, websocket.StatusPolicyViolation, "malformed trickle candidate"},
		{"garbage SDP", websocket.MessageBinary, garbageSDP, websocket.StatusPolicyViolation, "publisher offer refused"},
	} {
		t.Run(c.name, func(t *testing.T) {
			identity := "mallory" + string(rune('a'+i))
			conn := e.dial(t, identity, nil)
			defer conn.CloseNow()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, _, err := conn.Read(ctx); err != nil { // the join response
				t.Fatal(err)
			}
			_ = conn.Write(ctx, c.typ, c.data)
			var leave *lkp.LeaveRequest
			var err error
			for {
				var data []byte
				if _, data, err = conn.Read(ctx); err != nil {
					break
				}
				var m lkp.SignalResponse
				if proto.Unmarshal(data, &m) == nil && m.GetLeave() != nil {
					leave = m.GetLeave()
				}
			}
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != c.status || !strings.Contains(ce.Reason, c.text) {
				t.Errorf("closed with %v, want %v with %q", err, c.status, c.text)
			}
			if c.status == websocket.StatusPolicyViolation && (leave == nil || leave.GetAction() != lkp.LeaveRequest_DISCONNECT) {
				t.Errorf("leave %v before the close, want a DISCONNECT", leave)
			}
			sfutest.WaitFor(t, identity+" leaving", 5*time.Second, func() bool { return e.hub.Room("meet").Participant(identity) == nil })
		})
	}
	for _, ev := range e.events.Events(0) {
		if ev.Type == sfu.EventParticipantLeft && strings.HasPrefix(ev.Participant.Identity, "mallory") && ev.Reason != sfu.ReasonError {
			t.Errorf("%s left with reason %q, want error", ev.Participant.Identity, ev.Reason)
		}
	}

	// Out of order but harmless: an answer nobody asked for, a trickle before any offer, a
	// mute of an unknown track. The session goes on (it answers a ping).
	conn := e.dial(t, "early", url.Values{"auto_subscribe": {"0"}})
	defer conn.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, m := range []*lkp.SignalRequest{
		{Message: &lkp.SignalRequest_Answer{Answer: &lkp.SessionDescription{Type: "answer", Sdp: "v=0", Id: 7}}},
		{Message: &lkp.SignalRequest_Trickle{Trickle: &lkp.TrickleRequest{CandidateInit: `{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host"}`}}},
		{Message: &lkp.SignalRequest_Mute{Mute: &lkp.MuteTrackRequest{Sid: "TR_unknown", Muted: true}}},
		{Message: &lkp.SignalRequest_PingReq{PingReq: &lkp.Ping{Timestamp: 42}}},
	} {
		if err := conn.Write(ctx, websocket.MessageBinary, mustMarshal(t, m)); err != nil {
			t.Fatal(err)
		}
	}
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("no pong after out-of-order requests: %v", err)
		}
		var m lkp.SignalResponse
		if proto.Unmarshal(data, &m) == nil && m.GetPongResp().GetLastPingTimestamp() == 42 {
			break
		}
	}

	// Through all of it, alice's audio kept reaching bob.
	bob.waitMedia(alice, 25)
}

// A data packet over the size limit or beyond the rate is dropped and counted, not relayed.
func TestDataLimits(t *testing.T) {
	e := newEnv(t)
	alice := e.connect(t, "alice", false, "1")
	bob := e.connect(t, "bob", false, "1")
	ss, _ := e.srv.sessions.Get(alice.sid())
	user := func(payload string) []byte {
		b, _ := proto.Marshal(&lkp.DataPacket{Value: &lkp.DataPacket_User{User: &lkp.UserPacket{Payload: []byte(payload)}}})
		return b
	}
	sfutest.WaitFor(t, "bob's data channel", 10*time.Second, func() bool {
		bs, _ := e.srv.sessions.Get(bob.sid())
		return bs.sub.reliable.ReadyState() == webrtc.DataChannelStateOpen
	})
	now := time.Now()
	ss.onData(user("small"), true, now)
	ss.onData(user(strings.Repeat("x", MaxDataPacket)), true, now)
	bob.waitData("small", "")
	if got := ss.dataDropped.Load(); got != 1 {
		t.Errorf("%d packets dropped, want the oversized one", got)
	}
	for range int(dataBurst) + 10 { // at one instant: the burst less the one sent passes
		ss.onData(user("flood"), false, now)
	}
	if got := ss.dataDropped.Load(); got != 1+11 {
		t.Errorf("a flood past the burst dropped %d packets, want 11 (and the oversized one)", got-1)
	}
}
