package livekit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	lkp "github.com/livekit/protocol/livekit"
	"github.com/pion/webrtc/v4"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-media/sluice/sfu"
)

const (
	// pingInterval and pingTimeout are announced in the JoinResponse: the client pings every
	// interval and reconnects when no pong came within the timeout.
	pingInterval = 5
	pingTimeout  = 15
	// outQueue bounds the messages waiting for the WebSocket; a client that does not read
	// them is disconnected.
	outQueue = 256
	// writeTimeout bounds one WebSocket write.
	writeTimeout = 10 * time.Second
	// DefaultReconnectWindow is how long a session outlives its WebSocket (or a failed ICE
	// path) waiting for the client to resume it; then the participant leaves
	// (reconnect_timeout).
	DefaultReconnectWindow = 20 * time.Second
)

// session is one LiveKit participant: the WebSocket, the sfu participant and its two peer
// connections.
//
// Goroutines: run reads the WebSocket and handles each request in turn; writeLoop owns the
// WebSocket's writes; watch follows the room. run owns the others and waits for them.
//
// The session outlives its WebSocket: when it drops, run waits up to Server.ReconnectWindow for the
// client to resume (a new /rtc with reconnect=1 and the participant sid), which hands run the
// new WebSocket; the participant, its peer connections and subscriptions stay.
type session struct {
	srv   *Server
	conn  *websocket.Conn // the current WebSocket; guarded by mu
	p     *sfu.Participant
	room  *sfu.Room
	grant grant
	log   *slog.Logger
	auto  bool // auto-subscribe

	ctx    context.Context
	cancel context.CancelFunc
	out    chan *lkp.SignalResponse
	wg     sync.WaitGroup

	pub *publisher
	sub *subscriber

	mu     sync.Mutex
	reason string
	err    error
	// offered is set by the client's first offer: from then on it is configured and takes the
	// subscriber offer.
	offered bool

	dataLimit   dataLimiter
	dataDropped atomic.Uint64

	resumed chan *websocket.Conn // a resuming client's WebSocket, for run
	resync  chan struct{}        // asks watch to send the whole room again (cap 1)
	poke    chan struct{}        // asks watch to sync the subscriptions again (cap 1)
}

func newSession(parent context.Context, srv *Server, conn *websocket.Conn, p *sfu.Participant, g grant, auto bool) *session {
	ctx, cancel := context.WithCancel(parent)
	s := &session{
		srv: srv, conn: conn, p: p, room: p.Room(), grant: g, auto: auto,
		log: srv.log.With("room", p.Room().Name(), "participant", p.Identity(), "protocol", Protocol),
		ctx: ctx, cancel: cancel, out: make(chan *lkp.SignalResponse, outQueue),
		resumed: make(chan *websocket.Conn), resync: make(chan struct{}, 1), poke: make(chan struct{}, 1),
	}
	s.pub = &publisher{s: s, pending: map[string]*pendingTrack{}}
	s.sub = &subscriber{s: s, downs: map[string]*down{}}
	return s
}

// close records why the session ends (first cause wins) and cancels it; run does the rest.
func (s *session) close(reason string, err error) {
	s.mu.Lock()
	if s.reason == "" {
		s.reason, s.err = reason, err
	}
	s.mu.Unlock()
	s.cancel()
}

func (s *session) cause() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reason == "" {
		return sfu.ReasonClientDisconnected, nil
	}
	return s.reason, s.err
}

// send queues a message for the client; a client too slow to take them is disconnected.
func (s *session) send(msg *lkp.SignalResponse) {
	select {
	case s.out <- msg:
	case <-s.ctx.Done():
	default:
		s.close(sfu.ReasonError, errors.New("the client does not read its signalling messages"))
	}
}

func (s *session) run() {
	s.log.Info("livekit session started")
	var err error
	if s.pub.pc, err = s.srv.engine.NewPeerConnection(); err == nil {
		s.sub.pc, err = s.srv.engine.NewPeerConnection()
	}
	if err != nil {
		s.close(sfu.ReasonError, err)
	} else {
		s.pub.setup()
		s.sub.setup()
		s.p.SetDataReceiver(s)
		s.send(&lkp.SignalResponse{Message: &lkp.SignalResponse_Join{Join: s.joinResponse()}})
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.watch()
	}()
	go func() {
		defer s.wg.Done()
		s.relayActivity()
	}()
	for conn := s.conn; conn != nil; conn = s.waitResume() {
		s.serveConn(conn)
	}
	reason, cerr := s.cause()
	s.cancel()
	// The publisher's tracks end first (consumers see them go), then the participant leaves,
	// then the subscriber's conversions are released.
	s.pub.stop()
	s.p.Close(reason, cerr)
	s.sub.stop()
	s.wg.Wait()
	s.log.Info("livekit session ended", "reason", reason)
}

// serveConn reads and writes conn until it drops or the session ends. When the server ends
// the session, the client is told with a leave first, so that it does not try to resume.
func (s *session) serveConn(conn *websocket.Conn) {
	s.mu.Lock()
	s.conn = conn
	s.mu.Unlock()
	connCtx, connDone := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.writeLoop(connCtx, conn)
	}()
	// goodbye tells the client why the server ended the session, then closes conn.
	goodbye := func() {
		reason, err := s.cause()
		if reason != sfu.ReasonClientDisconnected {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = writeMsg(ctx, conn, &lkp.SignalResponse{Message: &lkp.SignalResponse_Leave{Leave: &lkp.LeaveRequest{
				Reason: disconnectReason(reason), Action: lkp.LeaveRequest_DISCONNECT,
			}}})
			cancel()
		}
		_ = conn.Close(closeStatus(reason, err))
	}
	said := make(chan struct{})
	stop := context.AfterFunc(s.ctx, func() {
		defer close(said)
		goodbye()
	})
	s.readLoop(conn)
	if !stop() {
		<-said // the goodbye is being said
	} else if s.ctx.Err() != nil {
		goodbye() // the session ended before the AfterFunc ran
	}
	connDone() // only now: cancelling a write in progress would cut the goodbye short
	_ = conn.CloseNow()
	wg.Wait()
}

// closeStatus is the WebSocket close of a session that ended for reason: a request the server
// could not follow is a policy violation whose text says what was wrong.
func closeStatus(reason string, err error) (websocket.StatusCode, string) {
	switch {
	case reason == sfu.ReasonServerShutdown:
		return websocket.StatusGoingAway, "server shutdown"
	case reason == sfu.ReasonError && err != nil:
		msg := err.Error()
		if len(msg) > 120 { // a close frame's reason is at most 123 bytes
			msg = strings.ToValidUTF8(msg[:120], "")
		}
		return websocket.StatusPolicyViolation, msg
	}
	return websocket.StatusNormalClosure, reason
}

// waitResume waits for the client to resume the session after its WebSocket dropped; nil when
// the session ends first (or the window passes, which ends it).
func (s *session) waitResume() *websocket.Conn {
	if s.ctx.Err() != nil {
		return nil
	}
	s.log.Info("livekit signalling dropped: waiting for the client to resume", "window", s.srv.ReconnectWindow)
	t := time.NewTimer(s.srv.ReconnectWindow)
	defer t.Stop()
	select {
	case conn := <-s.resumed:
		return conn
	case <-t.C:
		s.close(sfu.ReasonReconnectTimeout, nil)
	case <-s.ctx.Done():
	}
	return nil
}

// resume hands conn, the WebSocket of the client resuming this session, to run: the client
// gets a ReconnectResponse, the whole room state again, and an ICE restart of the subscriber
// connection (it restarts its publisher's itself). The WebSocket it replaces, if the server
// still holds it, is closed. It reports false when the session ended first.
func (s *session) resume(conn *websocket.Conn) bool {
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	if err := writeMsg(ctx, conn, &lkp.SignalResponse{Message: &lkp.SignalResponse_Reconnect{Reconnect: &lkp.ReconnectResponse{
		IceServers: s.iceServers(),
	}}}); err != nil {
		return false
	}
	s.mu.Lock()
	old := s.conn
	s.mu.Unlock()
	if old != nil {
		_ = old.CloseNow()
	}
	select {
	case s.resumed <- conn:
	case <-ctx.Done():
		return false
	}
	s.log.Info("livekit session resumed")
	select {
	case s.resync <- struct{}{}:
	default:
	}
	s.sub.negotiateRestart()
	return true
}

// writeLoop sends the queued messages on conn until connCtx or the session ends. A message
// that conn fails to take is lost with it (the client resyncs on resume).
func (s *session) writeLoop(connCtx context.Context, conn *websocket.Conn) {
	for {
		select {
		case msg := <-s.out:
			if err := writeMsg(connCtx, conn, msg); err != nil {
				_ = conn.CloseNow()
				return
			}
		case <-connCtx.Done():
			return
		case <-s.ctx.Done():
			return
		}
	}
}

// writeMsg writes one message on conn (safe beside other writes).
func writeMsg(ctx context.Context, conn *websocket.Conn, msg *lkp.SignalResponse) error {
	data, err := proto.Marshal(msg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	return conn.Write(ctx, websocket.MessageBinary, data)
}

// disconnectReason maps an sfu leave reason onto LiveKit's.
func disconnectReason(reason string) lkp.DisconnectReason {
	switch reason {
	case sfu.ReasonServerShutdown:
		return lkp.DisconnectReason_SERVER_SHUTDOWN
	case sfu.ReasonRemoved:
		return lkp.DisconnectReason_PARTICIPANT_REMOVED
	case sfu.ReasonDuplicateIdentity:
		return lkp.DisconnectReason_DUPLICATE_IDENTITY
	case sfu.ReasonRoomDeleted:
		return lkp.DisconnectReason_ROOM_DELETED
	case sfu.ReasonClientDisconnected:
		return lkp.DisconnectReason_CLIENT_INITIATED
	}
	return lkp.DisconnectReason_UNKNOWN_REASON
}

// readLoop reads and handles conn's requests until it drops (also when the client stays
// silent past the ping timeout) or a request ends the session.
func (s *session) readLoop(conn *websocket.Conn) {
	for {
		ctx, cancel := context.WithTimeout(context.Background(), pingTimeout*time.Second)
		typ, data, err := conn.Read(ctx)
		cancel()
		if errors.Is(err, websocket.ErrMessageTooBig) { // closed with 1009 by the library
			s.close(sfu.ReasonError, fmt.Errorf("a signal message over %d bytes", MaxMessage))
			return
		}
		if err != nil {
			return
		}
		if err := s.handleMessage(typ, data); err != nil {
			s.close(sfu.ReasonError, err)
			return
		}
		if s.ctx.Err() != nil {
			return
		}
	}
}

// handleMessage decodes and applies one WebSocket message (binary protobuf, or the JSON
// encoding some clients use).
func (s *session) handleMessage(typ websocket.MessageType, data []byte) error {
	var req lkp.SignalRequest
	var err error
	if typ == websocket.MessageText {
		err = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(data, &req)
	} else {
		err = proto.Unmarshal(data, &req)
	}
	if err != nil {
		return fmt.Errorf("malformed signal request: %w", err)
	}
	return s.handle(&req)
}

// handle applies one request. An error ends the session (the client sent something that
// cannot be followed); requests that are merely refused are answered and logged.
func (s *session) handle(req *lkp.SignalRequest) error {
	switch m := req.Message.(type) {
	case *lkp.SignalRequest_Offer:
		return s.pub.offer(m.Offer)
	case *lkp.SignalRequest_Answer:
		return s.sub.answer(m.Answer)
	case *lkp.SignalRequest_Trickle:
		return s.trickle(m.Trickle)
	case *lkp.SignalRequest_AddTrack:
		s.pub.addTrack(m.AddTrack)
	case *lkp.SignalRequest_Mute:
		s.pub.mute(m.Mute.GetSid(), m.Mute.GetMuted())
	case *lkp.SignalRequest_UpdateMetadata:
		s.updateMetadata(m.UpdateMetadata)
	case *lkp.SignalRequest_Leave:
		s.close(sfu.ReasonClientDisconnected, nil)
	case *lkp.SignalRequest_Ping:
		s.send(&lkp.SignalResponse{Message: &lkp.SignalResponse_Pong{Pong: time.Now().UnixMilli()}})
	case *lkp.SignalRequest_PingReq:
		s.send(&lkp.SignalResponse{Message: &lkp.SignalResponse_PongResp{PongResp: &lkp.Pong{
			LastPingTimestamp: m.PingReq.GetTimestamp(), Timestamp: time.Now().UnixMilli(),
		}}})
	case *lkp.SignalRequest_Subscription:
		s.updateSubscription(m.Subscription)
	case *lkp.SignalRequest_TrackSetting:
		// Without simulcast there is one layer: quality, size and fps are satisfied as they
		// are; disabled pauses the track.
		s.sub.setDisabled(m.TrackSetting.GetTrackSids(), m.TrackSetting.GetDisabled())
	case nil:
		return errors.New("empty signal request")
	default:
		// Subscription settings, layers, permissions, sync state, simulations: not used by
		// this server (every subscriber gets every layer it negotiated).
		s.log.Debug("ignoring signal request", "type", fmt.Sprintf("%T", m))
	}
	return nil
}

// watchICE gives a failed connection Server.ReconnectWindow to recover (the client resumes and
// restarts ICE), then ends the session.
func (s *session) watchICE(pc *webrtc.PeerConnection, name string) {
	var mu sync.Mutex
	var timer *time.Timer
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		mu.Lock()
		defer mu.Unlock()
		switch st {
		case webrtc.PeerConnectionStateFailed:
			if timer == nil {
				s.log.Info("livekit connection failed: waiting for an ICE restart", "connection", name)
				timer = time.AfterFunc(s.srv.ReconnectWindow, func() {
					s.close(sfu.ReasonReconnectTimeout, fmt.Errorf("%s connection failed", name))
				})
			}
		case webrtc.PeerConnectionStateConnected:
			if timer != nil {
				timer.Stop()
				timer = nil
			}
		case webrtc.PeerConnectionStateClosed:
			if timer != nil {
				timer.Stop()
			}
		default:
		}
	})
}

// updateSubscription records the client's choice for the tracks it names and has the watcher
// apply it; a track sid that is not in the room is answered with SE_TRACK_NOTFOUND.
func (s *session) updateSubscription(u *lkp.UpdateSubscription) {
	sids := append([]string(nil), u.GetTrackSids()...)
	for _, pt := range u.GetParticipantTracks() {
		sids = append(sids, pt.GetTrackSids()...)
	}
	known := map[string]bool{}
	for _, p := range s.room.Participants() {
		for _, t := range p.Tracks() {
			known[t.SID()] = true
		}
	}
	var ok []string
	for _, sid := range sids {
		if !known[sid] {
			s.send(&lkp.SignalResponse{Message: &lkp.SignalResponse_SubscriptionResponse{SubscriptionResponse: &lkp.SubscriptionResponse{
				TrackSid: sid, Err: lkp.SubscriptionError_SE_TRACK_NOTFOUND,
			}}})
			continue
		}
		ok = append(ok, sid)
	}
	s.sub.choose(ok, u.GetSubscribe())
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// trickle adds a client's ICE candidate to the connection it names.
func (s *session) trickle(t *lkp.TrickleRequest) error {
	var c webrtc.ICECandidateInit
	if err := json.Unmarshal([]byte(t.GetCandidateInit()), &c); err != nil {
		return fmt.Errorf("malformed trickle candidate: %w", err)
	}
	if t.GetTarget() == lkp.SignalTarget_SUBSCRIBER {
		s.sub.candidate(c)
	} else {
		s.pub.candidate(c)
	}
	return nil
}

// updateMetadata applies the client's own metadata and name.
func (s *session) updateMetadata(u *lkp.UpdateParticipantMetadata) {
	upd := sfu.ParticipantUpdate{Metadata: new(string)}
	*upd.Metadata = u.GetMetadata()
	if name := u.GetName(); name != "" {
		upd.Name = &name
	}
	if err := s.p.Update(upd); err != nil {
		s.send(&lkp.SignalResponse{Message: &lkp.SignalResponse_RequestResponse{RequestResponse: &lkp.RequestResponse{
			RequestId: u.GetRequestId(), Reason: lkp.RequestResponse_NOT_ALLOWED, Message: err.Error(),
		}}})
	}
}

// sendTrickle sends one of our candidates for target.
func (s *session) sendTrickle(c *webrtc.ICECandidate, target lkp.SignalTarget) {
	if c == nil {
		return
	}
	raw, err := json.Marshal(c.ToJSON())
	if err != nil {
		return
	}
	s.send(&lkp.SignalResponse{Message: &lkp.SignalResponse_Trickle{Trickle: &lkp.TrickleRequest{CandidateInit: string(raw), Target: target}}})
}

// permission is the session's own ParticipantPermission.
func (s *session) permission() *lkp.ParticipantPermission {
	return &lkp.ParticipantPermission{
		CanSubscribe: s.grant.canSubscribe, CanPublish: s.grant.canPublish, CanPublishData: s.grant.canData,
		Hidden: s.grant.hidden, CanUpdateMetadata: true,
	}
}

func (s *session) joinResponse() *lkp.JoinResponse {
	self := participantInfo(s.p, s.permission())
	self.Version = s.srv.version.Add(1)
	jr := &lkp.JoinResponse{
		Room:          roomInfo(s.room),
		Participant:   self,
		ServerVersion: serverVersion,
		ServerInfo:    &lkp.ServerInfo{Edition: lkp.ServerInfo_Standard, Version: serverVersion, Protocol: serverProtocol},
		PingInterval:  pingInterval,
		PingTimeout:   pingTimeout,
	}
	for _, p := range s.room.Participants() {
		if p != s.p && !s.srv.hidden(p) {
			info := participantInfo(p, nil)
			info.Version = s.srv.version.Add(1)
			jr.OtherParticipants = append(jr.OtherParticipants, info)
		}
	}
	jr.IceServers = s.iceServers()
	return jr
}

func (s *session) iceServers() []*lkp.ICEServer {
	var out []*lkp.ICEServer
	for _, srv := range s.srv.engine.ICEServers() {
		cred, _ := srv.Credential.(string)
		out = append(out, &lkp.ICEServer{Urls: srv.URLs, Username: srv.Username, Credential: cred})
	}
	return out
}
