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
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	lkp "github.com/livekit/protocol/livekit"

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

	sessions *rtc.Registry[*session] // by participant sid (what a resuming client names)

	// ReconnectWindow is how long a session waits for its client to resume after the
	// WebSocket or ICE path dropped (DefaultReconnectWindow); set it before Run.
	ReconnectWindow time.Duration
}

// NewServer returns a server for engine and hub; it starts nothing.
func NewServer(engine *rtc.Engine, hub *sfu.Hub, gate *api.Gate, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{engine: engine, hub: hub, gate: gate, log: log, ReconnectWindow: DefaultReconnectWindow,
		sessions: rtc.NewRegistry(func(ss *session, reason string, err error) { ss.close(reason, err) })}
}

// Register mounts /rtc and /rtc/validate.
func (s *Server) Register(mux interface {
	Handle(pattern string, h http.Handler)
}) {
	mux.Handle("GET /rtc", http.HandlerFunc(s.serveRTC))
	mux.Handle("GET /rtc/validate", http.HandlerFunc(s.validate))
}

// Run accepts sessions until ctx ends, then closes them all and waits for them.
func (s *Server) Run(ctx context.Context) error { return s.sessions.Run(ctx) }

// Sessions returns the number of live sessions.
func (s *Server) Sessions() int { return s.sessions.Len() }

// peers returns the live sessions in room other than self.
func (s *Server) peers(room *sfu.Room, self *session) []*session {
	var out []*session
	for _, ss := range s.sessions.All() {
		if ss != self && ss.room == room {
			out = append(out, ss)
		}
	}
	return out
}

// hidden reports whether p joined with a hidden grant: other participants do not see it.
func (s *Server) hidden(p *sfu.Participant) bool {
	ss, ok := s.sessions.Get(p.Info().SID)
	return ok && ss.p == p && ss.grant.hidden
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
	parent, ok := s.sessions.Context(r)
	if !ok {
		return
	}
	q := r.URL.Query()
	if q.Get("reconnect") == "1" {
		s.resume(w, r, g, q.Get("sid"))
		return
	}
	p, err := s.hub.Join(g.room, sfu.ParticipantSpec{
		Identity: g.identity, Name: g.name, Metadata: g.metadata, Kind: sfu.ParticipantWebRTC, RemoteAddr: r.RemoteAddr,
	})
	if err != nil {
		api.WriteError(w, api.Errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "cannot join: %v", err))
		return
	}
	conn, err := accept(w, r)
	if err != nil {
		p.Close(sfu.ReasonError, err)
		return
	}
	ss := newSession(parent, s, conn, p, g, q.Get("auto_subscribe") != "0")
	if !s.sessions.Go(p.Info().SID, ss, ss.run) {
		p.Close(sfu.ReasonServerShutdown, nil)
		_ = conn.Close(websocket.StatusGoingAway, "shutting down")
	}
}

// accept upgrades to the signalling WebSocket. Any origin: LiveKit apps are served from their
// own origins, and the token is the credential (no cookies are read).
func accept(w http.ResponseWriter, r *http.Request) (*websocket.Conn, error) {
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(MaxMessage)
	return conn, nil
}

// resume hands a reconnecting client's new WebSocket to its session (the participant sid it
// names, with the same identity and room). A session that is gone gets a leave asking for a
// full reconnect, as LiveKit servers answer, so the client joins anew.
func (s *Server) resume(w http.ResponseWriter, r *http.Request, g grant, sid string) {
	ss, ok := s.sessions.Get(sid)
	if ok && (ss.grant.identity != g.identity || ss.grant.room != g.room) {
		api.WriteError(w, api.Errorf(http.StatusForbidden, api.CodeForbidden, "the token does not name the resumed participant"))
		return
	}
	conn, err := accept(w, r)
	if err != nil {
		return
	}
	if ok && ss.resume(conn) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Second)
	defer cancel()
	_ = writeMsg(ctx, conn, &lkp.SignalResponse{Message: &lkp.SignalResponse_Leave{Leave: &lkp.LeaveRequest{
		CanReconnect: true, Reason: lkp.DisconnectReason_STATE_MISMATCH, Action: lkp.LeaveRequest_RECONNECT,
	}}})
	_ = conn.Close(websocket.StatusNormalClosure, "no session to resume")
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
