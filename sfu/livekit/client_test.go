package livekit

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	lkp "github.com/livekit/protocol/livekit"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/rtc"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// env is an in-process sluice with the LiveKit server: hub, rtc engine, open-mode gate.
type env struct {
	hub    *sfu.Hub
	events *sfu.LocalEmitter
	srv    *Server
	url    string // ws://…
	http   string // http://…
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvWith(t, rtc.Config{Port: 0, BindIP: "127.0.0.1"})
}

// newEnvWith is newEnv with the WebRTC engine configured by cfg.
func newEnvWith(t testing.TB, cfg rtc.Config) *env {
	t.Helper()
	hub, em := sfutest.NewHub(t, nil)
	sfutest.RunHub(t, hub)
	engine, err := rtc.NewEngine(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	gate := api.NewGate(auth.NewVerifier(auth.Config{}, nil), em)
	srv := NewServer(engine, hub, gate, nil)
	a := api.New(api.Options{Hub: hub, Gate: gate})
	srv.Register(a)
	hs := httptest.NewServer(a.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		hs.Close()
		_ = engine.Close()
	})
	return &env{hub: hub, events: em, srv: srv, url: "ws" + strings.TrimPrefix(hs.URL, "http"), http: hs.URL}
}

// lkClient is a LiveKit client built on pion: it speaks the /rtc protocol as livekit-client
// does (publisher connection offered by the client, subscriber connection offered by the
// server, trickle both ways, resume with reconnect=1).
type lkClient struct {
	t        testing.TB
	e        *env
	identity string
	api      *webrtc.API

	pub, sub *webrtc.PeerConnection
	audio    *webrtc.TrackLocalStaticRTP
	sender   *webrtc.RTPSender
	// level is the RFC 6464 audio level (-dBov) the audio packets carry.
	level    atomic.Uint32
	stopSend chan struct{}
	sendDone chan struct{}

	mu      sync.Mutex
	conn    *websocket.Conn
	join    *lkp.JoinResponse
	got     []*lkp.SignalResponse // every message, in order
	packets map[string]*atomic.Int64
	data    []*lkp.DataPacket
	readers sync.WaitGroup
}

func (e *env) dial(t testing.TB, identity string, query url.Values) *websocket.Conn {
	t.Helper()
	conn, err := e.tryDial(identity, query)
	if err != nil {
		t.Fatalf("dial %s: %v", identity, err)
	}
	return conn
}

func (e *env) tryDial(identity string, query url.Values) (*websocket.Conn, error) {
	q := url.Values{"access_token": {openToken(identity)}}
	for k, v := range query {
		q[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, e.url+"/rtc?"+q.Encode(), nil)
	if err == nil {
		conn.SetReadLimit(1 << 20)
	}
	return conn, err
}

// openToken is a LiveKit token for room "meet"; open mode does not check its signature.
func openToken(identity string) string {
	yes := true
	tok, err := auth.Sign("k", "open-mode-does-not-check-this-secret", auth.Claims{
		Identity: identity, ExpiresAt: time.Now().Add(time.Hour).Unix(),
		Video: &auth.VideoGrant{RoomJoin: true, Room: "meet", CanPublish: &yes, CanSubscribe: &yes, CanPublishData: &yes},
	})
	if err != nil {
		panic(err)
	}
	return tok
}

// connect joins as identity (auto-subscribing unless autoSub is "0") and, with publish,
// publishes an Opus track sending 50 packets a second.
func (e *env) connect(t testing.TB, identity string, publish bool, autoSub string) *lkClient {
	t.Helper()
	a, err := rtc.LoopbackAPI(clientMedia(t))
	if err != nil {
		t.Fatal(err)
	}
	return e.connectWith(t, a, a, identity, publish, autoSub)
}

// clientMedia is pion's default codecs with the audio level extension (RFC 6464), as a
// browser offers them.
func clientMedia(t testing.TB) *webrtc.MediaEngine {
	t.Helper()
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.AudioLevelURI}, webrtc.RTPCodecTypeAudio); err != nil {
		t.Fatal(err)
	}
	return m
}

// connectWith is connect with the publisher connection made by a, the subscriber's by b.
func (e *env) connectWith(t testing.TB, a, b *webrtc.API, identity string, publish bool, autoSub string) *lkClient {
	t.Helper()
	var err error
	c := &lkClient{t: t, e: e, identity: identity, api: a, packets: map[string]*atomic.Int64{}}
	if c.pub, err = a.NewPeerConnection(webrtc.Configuration{}); err != nil {
		t.Fatal(err)
	}
	if c.sub, err = b.NewPeerConnection(webrtc.Configuration{}); err != nil {
		t.Fatal(err)
	}
	c.pub.OnICECandidate(func(cand *webrtc.ICECandidate) { c.trickle(cand, lkp.SignalTarget_PUBLISHER) })
	c.sub.OnICECandidate(func(cand *webrtc.ICECandidate) { c.trickle(cand, lkp.SignalTarget_SUBSCRIBER) })
	c.sub.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		n := &atomic.Int64{}
		c.mu.Lock()
		c.packets[tr.StreamID()] = n
		c.mu.Unlock()
		for {
			if _, _, err := tr.ReadRTP(); err != nil {
				return
			}
			n.Add(1)
		}
	})
	c.sub.OnDataChannel(func(dc *webrtc.DataChannel) {
		dc.OnMessage(func(m webrtc.DataChannelMessage) {
			var pkt lkp.DataPacket
			if proto.Unmarshal(m.Data, &pkt) == nil {
				c.mu.Lock()
				c.data = append(c.data, &pkt)
				c.mu.Unlock()
			}
		})
	})
	if _, err := c.pub.CreateDataChannel(dataReliable, nil); err != nil {
		t.Fatal(err)
	}
	c.attach(e.dial(t, identity, url.Values{"auto_subscribe": {autoSub}}))
	c.waitFor("the join response", func(m *lkp.SignalResponse) bool { return m.GetJoin() != nil })
	if publish {
		c.audio, _ = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "mic-"+identity, "stream-"+identity)
		sender, err := c.pub.AddTrack(c.audio)
		if err != nil {
			t.Fatal(err)
		}
		c.sender = sender
		c.level.Store(127) // silence
		go func() {
			for {
				if _, _, err := sender.ReadRTCP(); err != nil {
					return
				}
			}
		}()
		c.request(&lkp.SignalRequest{Message: &lkp.SignalRequest_AddTrack{AddTrack: &lkp.AddTrackRequest{
			Cid: "mic-" + identity, Name: "mic", Type: lkp.TrackType_AUDIO, Source: lkp.TrackSource_MICROPHONE,
		}}})
		c.waitFor("TrackPublished", func(m *lkp.SignalResponse) bool { return m.GetTrackPublished() != nil })
		c.stopSend, c.sendDone = make(chan struct{}), make(chan struct{})
		go c.send()
	}
	c.offer(false)
	t.Cleanup(c.close)
	return c
}

// send writes Opus-sized packets until stopped, with the audio level extension once it is
// negotiated.
func (c *lkClient) send() {
	defer close(c.sendDone)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111}, Payload: make([]byte, 80)}
	var levelID uint8
	for {
		select {
		case <-tick.C:
			pkt.SequenceNumber++
			pkt.Timestamp += 960
			if levelID == 0 {
				for _, h := range c.sender.GetParameters().HeaderExtensions {
					if h.URI == sdp.AudioLevelURI {
						levelID = uint8(h.ID)
					}
				}
			}
			if levelID != 0 {
				_ = pkt.SetExtension(levelID, []byte{uint8(c.level.Load())})
			}
			_ = c.audio.WriteRTP(pkt)
		case <-c.stopSend:
			return
		}
	}
}

// offer sends the publisher offer (an ICE restart when resuming).
func (c *lkClient) offer(restart bool) {
	o, err := c.pub.CreateOffer(&webrtc.OfferOptions{ICERestart: restart})
	if err == nil {
		err = c.pub.SetLocalDescription(o)
	}
	if err != nil {
		c.t.Errorf("%s: publisher offer: %v", c.identity, err)
		return
	}
	c.request(&lkp.SignalRequest{Message: &lkp.SignalRequest_Offer{Offer: &lkp.SessionDescription{Type: "offer", Sdp: o.SDP}}})
}

func (c *lkClient) trickle(cand *webrtc.ICECandidate, target lkp.SignalTarget) {
	if cand == nil {
		return
	}
	raw, _ := json.Marshal(cand.ToJSON())
	c.request(&lkp.SignalRequest{Message: &lkp.SignalRequest_Trickle{Trickle: &lkp.TrickleRequest{CandidateInit: string(raw), Target: target}}})
}

// request sends one message on the current WebSocket (lost if it is down, as in a browser).
func (c *lkClient) request(req *lkp.SignalRequest) {
	data, err := proto.Marshal(req)
	if err != nil {
		c.t.Error(err)
		return
	}
	capture(false, data)
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = conn.Write(ctx, websocket.MessageBinary, data)
}

// attach reads conn's messages and answers offers, trickles and pings.
func (c *lkClient) attach(conn *websocket.Conn) {
	c.mu.Lock()
	c.conn = conn
	c.mu.Unlock()
	c.readers.Add(1)
	go func() {
		defer c.readers.Done()
		for {
			_, data, err := conn.Read(context.Background())
			if err != nil {
				return
			}
			var m lkp.SignalResponse
			if err := proto.Unmarshal(data, &m); err != nil {
				c.t.Errorf("%s: bad message from the server: %v", c.identity, err)
				return
			}
			c.mu.Lock()
			c.got = append(c.got, &m)
			if j := m.GetJoin(); j != nil {
				c.join = j
			}
			c.mu.Unlock()
			c.handle(&m)
		}
	}()
}

func (c *lkClient) handle(m *lkp.SignalResponse) {
	switch {
	case m.GetOffer() != nil:
		o := m.GetOffer()
		if err := c.sub.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: o.GetSdp()}); err != nil {
			c.t.Errorf("%s: subscriber offer: %v", c.identity, err)
			return
		}
		ans, err := c.sub.CreateAnswer(nil)
		if err == nil {
			err = c.sub.SetLocalDescription(ans)
		}
		if err != nil {
			c.t.Errorf("%s: subscriber answer: %v", c.identity, err)
			return
		}
		c.request(&lkp.SignalRequest{Message: &lkp.SignalRequest_Answer{Answer: &lkp.SessionDescription{Type: "answer", Sdp: ans.SDP, Id: o.GetId()}}})
	case m.GetAnswer() != nil:
		if err := c.pub.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: m.GetAnswer().GetSdp()}); err != nil {
			c.t.Errorf("%s: publisher answer: %v", c.identity, err)
		}
	case m.GetTrickle() != nil:
		var ci webrtc.ICECandidateInit
		if err := json.Unmarshal([]byte(m.GetTrickle().GetCandidateInit()), &ci); err != nil {
			c.t.Errorf("%s: bad trickle: %v", c.identity, err)
			return
		}
		pc := c.pub
		if m.GetTrickle().GetTarget() == lkp.SignalTarget_SUBSCRIBER {
			pc = c.sub
		}
		_ = pc.AddICECandidate(ci)
	}
}

// waitFor waits for a message matching cond, received at any time so far.
func (c *lkClient) waitFor(what string, cond func(*lkp.SignalResponse) bool) *lkp.SignalResponse {
	c.t.Helper()
	var found *lkp.SignalResponse
	sfutest.WaitFor(c.t, c.identity+": "+what, 10*time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, m := range c.got {
			if cond(m) {
				found = m
				return true
			}
		}
		return false
	})
	return found
}

// received returns how many packets arrived of the stream whose id names participant sid.
func (c *lkClient) received(sid string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n int64
	for id, cnt := range c.packets {
		if strings.HasPrefix(id, sid+"|") {
			n += cnt.Load()
		}
	}
	return n
}

func (c *lkClient) sid() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.join.GetParticipant().GetSid()
}

// waitMedia waits until n more packets of from arrived.
func (c *lkClient) waitMedia(from *lkClient, n int64) {
	c.t.Helper()
	start := c.received(from.sid())
	sfutest.WaitFor(c.t, c.identity+" receiving "+from.identity+"'s audio", 15*time.Second, func() bool {
		return c.received(from.sid()) >= start+n
	})
}

// dropSignal cuts the WebSocket without a leave, as a network loss does.
func (c *lkClient) dropSignal() {
	c.mu.Lock()
	conn := c.conn
	c.conn = nil
	c.mu.Unlock()
	_ = conn.CloseNow()
	c.readers.Wait()
}

func (c *lkClient) close() {
	if c.stopSend != nil {
		close(c.stopSend)
		<-c.sendDone
		c.stopSend = nil
	}
	c.mu.Lock()
	conn := c.conn
	c.conn = nil
	c.mu.Unlock()
	if conn != nil {
		_ = conn.CloseNow()
	}
	c.readers.Wait()
	_ = c.pub.Close()
	_ = c.sub.Close()
}
