// Package livekit speaks LiveKit's client signalling protocol (the /rtc WebSocket with the
// protobuf messages of github.com/livekit/protocol), so that LiveKit client SDKs join sluice
// rooms: every participant of the room, whatever its protocol, appears to them, and what they
// publish goes through the same sfu core as WHIP, RTMP and RTSP.
//
// A session is one WebSocket and two peer connections on the rtc engine's shared sockets: the
// publisher connection (the client offers) and the subscriber connection (the server offers and
// renegotiates as tracks come and go).
package livekit

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/rtc"
)

// Protocol is the stream protocol of LiveKit sessions in events and the auth.failed reports.
const Protocol = "livekit"

// MaxMessage bounds one signalling message (an SDP with many media sections fits easily).
const MaxMessage = 256 << 10

// Server answers /rtc WebSocket requests and owns their sessions. NewServer starts nothing;
// Run serves until its context ends and then closes every session. Handlers are safe for
// concurrent use.
type Server struct {
	engine *rtc.Engine
	hub    *sfu.Hub
	gate   *api.Gate
	log    *slog.Logger

	// version numbers every ParticipantInfo sent: clients drop an update older than the
	// last one they applied.
	version atomic.Uint32

	mu       sync.Mutex
	ctx      context.Context
	sessions map[*session]struct{}
	closed   bool
	wg       sync.WaitGroup
	ready    chan struct{}
}

// NewServer returns a server for engine and hub; it starts nothing.
func NewServer(engine *rtc.Engine, hub *sfu.Hub, gate *api.Gate, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{engine: engine, hub: hub, gate: gate, log: log, sessions: map[*session]struct{}{}, ready: make(chan struct{})}
}

// Register mounts /rtc and /rtc/validate.
func (s *Server) Register(mux interface {
	Handle(pattern string, h http.Handler)
}) {
	mux.Handle("GET /rtc", http.HandlerFunc(s.serveRTC))
	mux.Handle("GET /rtc/validate", http.HandlerFunc(s.validate))
}

// Run accepts sessions until ctx ends, then closes them all and waits for them.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	s.ctx = ctx
	s.mu.Unlock()
	close(s.ready)
	<-ctx.Done()
	s.mu.Lock()
	s.closed = true
	all := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		all = append(all, ss)
	}
	s.mu.Unlock()
	for _, ss := range all {
		ss.close(sfu.ReasonServerShutdown, nil)
	}
	s.wg.Wait()
	return nil
}

// Sessions returns the number of live sessions.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// peers returns the live sessions in room other than self.
func (s *Server) peers(room *sfu.Room, self *session) []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*session
	for ss := range s.sessions {
		if ss != self && ss.room == room {
			out = append(out, ss)
		}
	}
	return out
}

// hidden reports whether p joined with a hidden grant: other participants do not see it.
func (s *Server) hidden(p *sfu.Participant) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ss := range s.sessions {
		if ss.p == p {
			return ss.grant.hidden
		}
	}
	return false
}

// validate answers the request livekit-client makes when the WebSocket failed: 200 when the
// token would be admitted, else the refusal's status with its message as plain text.
func (s *Server) validate(w http.ResponseWriter, r *http.Request) {
	cors(w)
	if _, aerr := s.admit(r); aerr != nil {
		http.Error(w, aerr.Message, aerr.Status)
		return
	}
	_, _ = w.Write([]byte("success"))
}

func cors(w http.ResponseWriter) {
	w.Header().Set("Access-Control-Allow-Origin", "*")
}

// serveRTC admits the token, joins the room and upgrades to the signalling WebSocket. A
// refusal is an HTTP status before the upgrade.
func (s *Server) serveRTC(w http.ResponseWriter, r *http.Request) {
	g, aerr := s.admit(r)
	if aerr != nil {
		cors(w)
		api.WriteError(w, aerr)
		return
	}
	var parent context.Context
	select {
	case <-s.ready:
		s.mu.Lock()
		parent = s.ctx
		s.mu.Unlock()
	case <-r.Context().Done():
		return
	}
	q := r.URL.Query()
	p, err := s.hub.Join(g.room, sfu.ParticipantSpec{
		Identity: g.identity, Name: g.name, Metadata: g.metadata, Kind: sfu.ParticipantWebRTC, RemoteAddr: r.RemoteAddr,
	})
	if err != nil {
		api.WriteError(w, api.Errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "cannot join: %v", err))
		return
	}
	// Any origin: LiveKit apps are served from their own origins, and the token is the
	// credential (no cookies are read).
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		p.Close(sfu.ReasonError, err)
		return
	}
	conn.SetReadLimit(MaxMessage)
	ss := newSession(parent, s, conn, p, g, q.Get("auto_subscribe") != "0")
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		p.Close(sfu.ReasonServerShutdown, nil)
		_ = conn.Close(websocket.StatusGoingAway, "shutting down")
		return
	}
	s.sessions[ss] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		ss.run()
		s.mu.Lock()
		delete(s.sessions, ss)
		s.mu.Unlock()
	}()
}

// grant is what a token lets its participant do in its room.
type grant struct {
	room, identity, name, metadata    string
	canPublish, canSubscribe, canData bool
	hidden, admin                     bool
}

// errNoVideoGrant refuses a token that is not a LiveKit room token.
var errNoVideoGrant = errors.New("the token has no LiveKit video grant with roomJoin")

// admit reads the request's token: verified with the configured keys, or in open mode only
// decoded (it must still name the room and the identity).
func (s *Server) admit(r *http.Request) (grant, *api.Error) {
	token := api.RequestToken(r)
	var claims *auth.Claims
	var err error
	if s.gate.OpenMode() {
		claims, err = auth.ParseUnverified(token)
	} else {
		claims, err = s.gate.Verifier().Verify(token)
	}
	if err != nil {
		s.gate.Refused(err, Protocol, r.RemoteAddr)
		return grant{}, api.HTTPError(err)
	}
	v := claims.Video
	if v == nil || !v.RoomJoin || v.Room == "" {
		s.gate.Refused(auth.ErrPermissionDenied, Protocol, r.RemoteAddr)
		return grant{}, api.Errorf(http.StatusUnauthorized, api.CodeUnauthorized, "%v", errNoVideoGrant)
	}
	if err := sfu.ValidateName(v.Room); err != nil {
		return grant{}, api.Errorf(http.StatusBadRequest, api.CodeBadRequest, "room: %v", err)
	}
	if claims.Identity == "" {
		return grant{}, api.Errorf(http.StatusUnauthorized, api.CodeUnauthorized, "the token names no identity (sub)")
	}
	if err := sfu.ValidateName(claims.Identity); err != nil {
		return grant{}, api.Errorf(http.StatusBadRequest, api.CodeBadRequest, "identity: %v", err)
	}
	return grant{
		room: v.Room, identity: claims.Identity, name: claims.Name, metadata: claims.Metadata,
		canPublish: auth.Allowed(v.CanPublish), canSubscribe: auth.Allowed(v.CanSubscribe),
		canData: auth.Allowed(v.CanPublishData), hidden: v.Hidden, admin: v.RoomAdmin,
	}, nil
}
