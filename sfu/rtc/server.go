package rtc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/auth"
)

// MaxSDPBody bounds an SDP offer or trickle fragment.
const MaxSDPBody = 64 << 10

// Server answers WHIP and WHEP requests and owns their sessions. NewServer starts nothing;
// Run serves until its context ends and then closes every session. Handlers are safe for
// concurrent use.
type Server struct {
	engine *Engine
	hub    *sfu.Hub
	gate   *api.Gate
	log    *slog.Logger

	sessions *Registry[session] // by kind + "/" + id

	mu      sync.Mutex
	pending pendingSet
}

// session is a WHIP or WHEP session as the server sees it.
type session interface {
	// run serves the session until it ends and releases everything it holds.
	run()
	// close ends the session with reason; it does not wait.
	close(reason string, err error)
	// addCandidates applies a trickle ICE fragment.
	addCandidates(frag string) error
	etag() string
	// life returns what every session shares (its peer connection, log, context).
	life() *sessionLife
}

// NewServer returns a server for engine; it starts nothing.
func NewServer(engine *Engine, hub *sfu.Hub, gate *api.Gate, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{engine: engine, hub: hub, gate: gate, log: log,
		sessions: NewRegistry(func(ss session, reason string, err error) { ss.close(reason, err) })}
}

// Run accepts sessions until ctx ends, then closes them all and waits for them.
func (s *Server) Run(ctx context.Context) error { return s.sessions.Run(ctx) }

// Sessions returns the number of live sessions.
func (s *Server) Sessions() int { return s.sessions.Len() }

// Register mounts the WHIP and WHEP routes.
func (s *Server) Register(mux interface {
	Handle(pattern string, h http.Handler)
}) {
	mux.Handle("POST /whip/{room}", cors(http.HandlerFunc(s.postWHIP)))
	mux.Handle("POST /whep/{room}", cors(http.HandlerFunc(s.postWHEP)))
	mux.Handle("POST /whep/{room}/{identity}", cors(http.HandlerFunc(s.postWHEP)))
	for _, kind := range []string{"whip", "whep"} {
		mux.Handle("PATCH /"+kind+"/session/{id}", cors(http.HandlerFunc(s.patch)))
		mux.Handle("DELETE /"+kind+"/session/{id}", cors(http.HandlerFunc(s.delete)))
		mux.Handle("OPTIONS /"+kind+"/", cors(http.HandlerFunc(s.options)))
	}
}

// cors lets pages of any origin publish and play (browsers call WHIP/WHEP cross-origin).
func cors(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Access-Control-Allow-Origin", "*")
		hd.Set("Access-Control-Allow-Methods", "POST, PATCH, DELETE, OPTIONS")
		hd.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match")
		hd.Set("Access-Control-Expose-Headers", "Location, Link, ETag")
		h.ServeHTTP(w, r)
	})
}

func (s *Server) options(w http.ResponseWriter, _ *http.Request) {
	s.setLinks(w)
	w.WriteHeader(http.StatusNoContent)
}

// setLinks advertises the configured STUN/TURN servers (RFC 9725 §4.6).
func (s *Server) setLinks(w http.ResponseWriter) {
	for _, srv := range s.engine.cfg.ICEServers {
		for _, u := range srv.URLs {
			link := fmt.Sprintf("<%s>; rel=\"ice-server\"", u)
			if srv.Username != "" {
				link += fmt.Sprintf("; username=%q; credential=%q; credential-type=\"password\"", srv.Username, srv.Credential)
			}
			w.Header().Add("Link", link)
		}
	}
}

// admit runs the auth gate for a WHIP/WHEP request and returns the claims (nil in open mode).
func (s *Server) admit(w http.ResponseWriter, r *http.Request, action auth.Action, protocol string) (*auth.Claims, bool) {
	room := r.PathValue("room")
	if err := sfu.ValidateName(room); err != nil {
		api.WriteError(w, api.Errorf(http.StatusBadRequest, api.CodeBadRequest, "room: %v", err))
		return nil, false
	}
	claims, err := s.gate.Check(api.RequestToken(r), action, room, protocol, r.RemoteAddr)
	if err != nil {
		api.WriteError(w, api.HTTPError(err))
		return nil, false
	}
	return claims, true
}

// readOffer reads and parses an SDP offer, refusing what pion would choke on with a precise error.
// acceptOffer is the common start of a WHIP or WHEP session: it reads the request's SDP offer
// into a new peer connection (prepare, when set, adjusts it before the answer) and joins the
// participant of kind to room with the token's identity. On failure it has answered the
// request and released what it made.
func (s *Server) acceptOffer(w http.ResponseWriter, r *http.Request, room string, kind string, claims *auth.Claims,
	prepare func(*webrtc.PeerConnection) error) (context.Context, *webrtc.PeerConnection, *sfu.Participant, bool) {
	offer, err := readOffer(w, r)
	if err != nil {
		api.WriteError(w, err)
		return nil, nil, nil, false
	}
	parent, ok := s.sessions.Context(r)
	if !ok {
		return nil, nil, nil, false
	}
	slot, ok := s.reservePending(w, r)
	if !ok {
		return nil, nil, nil, false
	}
	pc, err := s.engine.newPeerConnection(kind != sfu.ParticipantWHIP)
	if err != nil {
		api.WriteError(w, err)
		return nil, nil, nil, false
	}
	slot.bind(pc)
	fail := func(err error) (context.Context, *webrtc.PeerConnection, *sfu.Participant, bool) {
		_ = pc.Close()
		api.WriteError(w, err)
		return nil, nil, nil, false
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return fail(api.Errorf(http.StatusBadRequest, "invalid_sdp", "the offer was refused: %v", err))
	}
	if prepare != nil {
		if err := prepare(pc); err != nil {
			return fail(err)
		}
	}
	spec := sfu.ParticipantSpec{Kind: kind, RemoteAddr: r.RemoteAddr}
	if claims != nil {
		spec.Identity, spec.Name = claims.Identity, claims.Name
	}
	p, err := s.hub.Join(room, spec)
	if errors.Is(err, sfu.ErrOverloaded) {
		return fail(err) // 503 overloaded, Retry-After
	}
	if err != nil {
		return fail(api.Errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "cannot join: %v", err))
	}
	return parent, pc, p, true
}

func readOffer(w http.ResponseWriter, r *http.Request) (string, error) {
	body, err := api.ReadBody(w, r, "application/sdp", MaxSDPBody)
	if err != nil {
		return "", err
	}
	var parsed sdp.SessionDescription
	if err := parsed.UnmarshalString(string(body)); err != nil {
		return "", api.Errorf(http.StatusBadRequest, "invalid_sdp", "the offer is not valid SDP: %v", err)
	}
	if len(parsed.MediaDescriptions) == 0 {
		return "", api.Errorf(http.StatusBadRequest, "invalid_sdp", "the offer has no media sections")
	}
	return string(body), nil
}

// add registers a session of kind ("whip" or "whep") under a fresh id and runs it; false when
// shutting down. The id is the session's capability: whoever knows its URL may trickle to it
// and end it (as WHIP/WHEP clients do, RFC 9725 §4.3), so it is 95 random bits, only ever
// sent in the Location header, and never logged; it is kept under its kind so that a WHEP URL
// cannot reach a WHIP session. With keys, the URL alone is not enough: owner (sessionOwner of
// the creating request) must also present itself.
func (s *Server) add(kind string, ss session, owner string) (string, bool) {
	id := kind + "/" + sfu.NewID("")
	ss.life().owner = owner
	s.mu.Lock()
	slot := s.claimPending(ss.life().pc)
	s.mu.Unlock()
	ok := s.sessions.Go(id, ss, func() {
		stop := s.watchPending(ss, slot)
		ss.run()
		stop()
	})
	if !ok && slot != nil {
		slot.release()
	}
	return id, ok
}

// sessionOwner names who created a session, for PATCH and DELETE to check: the token's
// identity, or, for a token without one, a digest of the token itself. Empty in open mode
// (claims nil), where the session URL is the only capability.
func sessionOwner(r *http.Request, claims *auth.Claims) string {
	switch {
	case claims == nil:
		return ""
	case claims.Identity != "":
		return "sub:" + claims.Identity
	}
	sum := sha256.Sum256([]byte(api.RequestToken(r)))
	return "token:" + hex.EncodeToString(sum[:])
}

// lookup finds the session a PATCH or DELETE names and checks that the request may act on it:
// with keys, its token must be valid (401), the session must exist (404), and the token must
// be the creator's identity or an admin's of the room (403). On failure it has answered the request.
func (s *Server) lookup(w http.ResponseWriter, r *http.Request) session {
	kind, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	var claims *auth.Claims
	if !s.gate.OpenMode() {
		var err error
		if claims, err = s.gate.Verifier().Verify(api.RequestToken(r)); err != nil {
			s.gate.Refused(err, kind, r.RemoteAddr)
			api.WriteError(w, api.HTTPError(err))
			return nil
		}
	}
	ss, _ := s.sessions.Get(kind + "/" + r.PathValue("id"))
	if ss == nil {
		api.WriteError(w, api.Errorf(http.StatusNotFound, api.CodeNotFound, "no such session"))
		return nil
	}
	l := ss.life()
	admin := claims != nil && claims.Allows(auth.ActionAdmin, l.participant.Room().Name())
	if l.owner != "" && !admin && sessionOwner(r, claims) != l.owner {
		s.gate.Refused(auth.ErrPermissionDenied, kind, r.RemoteAddr)
		api.WriteError(w, api.Errorf(http.StatusForbidden, api.CodeForbidden, "only the token that created the session (its identity) or an admin may change or end it"))
		return nil
	}
	return ss
}

// patch applies trickle ICE candidates (RFC 8840 fragments).
func (s *Server) patch(w http.ResponseWriter, r *http.Request) {
	ss := s.lookup(w, r)
	if ss == nil {
		return
	}
	body, err := api.ReadBody(w, r, "application/trickle-ice-sdpfrag", MaxSDPBody)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	if m := r.Header.Get("If-Match"); m != "" && m != "*" && m != ss.etag() {
		api.WriteError(w, api.Errorf(http.StatusPreconditionFailed, "etag_mismatch", "If-Match does not name this ICE session"))
		return
	}
	if err := ss.addCandidates(string(body)); err != nil {
		api.WriteError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	ss := s.lookup(w, r)
	if ss == nil {
		return
	}
	ss.close(sfu.ReasonClientDisconnected, nil)
	w.WriteHeader(http.StatusOK)
}

// answer completes the SDP exchange on pc: remote offer, answer, all local candidates.
func answer(pc *webrtc.PeerConnection, prepare func() error) (string, error) {
	if prepare != nil {
		if err := prepare(); err != nil {
			return "", err
		}
	}
	ans, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", api.Errorf(http.StatusBadRequest, "negotiation_failed", "cannot answer the offer: %v", err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(ans); err != nil {
		return "", api.Errorf(http.StatusBadRequest, "negotiation_failed", "cannot answer the offer: %v", err)
	}
	select {
	case <-gathered:
	case <-time.After(3 * time.Second):
	}
	return pc.LocalDescription().SDP, nil
}

// writeAnswer sends 201 with the answer and the session's URL.
func (s *Server) writeAnswer(w http.ResponseWriter, kind, id, etag, answer string) {
	s.setLinks(w)
	w.Header().Set("Location", "/"+kind+"/session/"+strings.TrimPrefix(id, kind+"/"))
	w.Header().Set("ETag", etag)
	w.Header().Set("Content-Type", "application/sdp")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write([]byte(answer)) //nolint:gosec // pion's SDP answer, served as application/sdp, never HTML
}

// addTrickle parses a trickle-ice-sdpfrag and adds its candidates to pc.
func addTrickle(pc *webrtc.PeerConnection, frag string) error {
	mid := ""
	for _, line := range strings.Split(frag, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "a=ice-ufrag:"):
			remote := pc.RemoteDescription()
			if remote != nil && !strings.Contains(remote.SDP, line) {
				return api.Errorf(http.StatusNotImplemented, "ice_restart_unsupported", "ICE restarts are not supported: start a new session")
			}
		case strings.HasPrefix(line, "a=mid:"):
			mid = strings.TrimPrefix(line, "a=mid:")
		case strings.HasPrefix(line, "a=candidate:"):
			m := mid
			if err := pc.AddICECandidate(webrtc.ICECandidateInit{Candidate: strings.TrimPrefix(line, "a="), SDPMid: &m}); err != nil {
				return api.Errorf(http.StatusBadRequest, "invalid_candidate", "candidate rejected: %v", err)
			}
		}
	}
	return nil
}

// sessionLife is what WHIP and WHEP sessions share: the peer connection, the participant, one
// context, and the one path that ends them.
type sessionLife struct {
	pc          *webrtc.PeerConnection
	participant *sfu.Participant
	log         *slog.Logger
	tag         string
	owner       string // sessionOwner of the creating request; set by add
	ctx         context.Context
	cancel      context.CancelFunc

	mu     sync.Mutex
	reason string
	err    error
}

func newSessionLife(parent context.Context, pc *webrtc.PeerConnection, p *sfu.Participant, log *slog.Logger) sessionLife {
	ctx, cancel := context.WithCancel(parent)
	return sessionLife{pc: pc, participant: p, log: log, tag: sfu.NewID(""), ctx: ctx, cancel: cancel}
}

func (l *sessionLife) etag() string { return `"` + l.tag + `"` }

func (l *sessionLife) life() *sessionLife { return l }

func (l *sessionLife) addCandidates(frag string) error { return addTrickle(l.pc, frag) }

// close records why the session ends (first cause wins) and cancels it; run does the rest.
func (l *sessionLife) close(reason string, err error) {
	l.mu.Lock()
	if l.reason == "" {
		l.reason, l.err = reason, err
	}
	l.mu.Unlock()
	l.cancel()
}

func (l *sessionLife) cause() (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reason == "" {
		return sfu.ReasonClientDisconnected, nil
	}
	return l.reason, l.err
}

// watchConnection ends the session when ICE/DTLS fails or closes, or the participant is removed.
func (l *sessionLife) watchConnection() {
	l.pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		switch st {
		case webrtc.PeerConnectionStateFailed:
			l.close(sfu.ReasonError, errors.New("ice/dtls connection failed"))
		case webrtc.PeerConnectionStateClosed:
			l.close(sfu.ReasonClientDisconnected, nil)
		default: // new, connecting, connected, disconnected: ICE may still recover
		}
	})
}
