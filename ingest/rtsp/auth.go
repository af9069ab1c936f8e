package rtsp

import (
	"errors"
	"net/url"
	"strings"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/headers"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
)

// target is what an admitted request acts on.
type target struct {
	room string
	// identity is, for a push, the publisher's identity; for a play, the participant to play
	// ("" = the room's main publisher).
	identity string
	// self is the identity of a player that a token names.
	self string
	// ingestID and ingestType name the ingest whose stream key admitted a push.
	ingestID   string
	ingestType string
}

// errBadPath is returned for a URL path that is not /<room>[/<identity>].
var errBadPath = errors.New("the path must be /<room> or /<room>/<identity>")

// parsePath splits gortsplib's path ("/room[/identity]", possibly with a trailing slash).
func parsePath(path string) (room, identity string, err error) {
	path = strings.Trim(path, "/")
	room, identity, _ = strings.Cut(path, "/")
	if sfu.ValidateName(room) != nil {
		return "", "", errBadPath
	}
	if identity != "" && sfu.ValidateName(identity) != nil {
		return "", "", errBadPath
	}
	return room, identity, nil
}

// authorize admits a request for action on path (DESIGN.md's key rules). Open mode: anyone.
// Key mode: a push needs an ingest's stream key (rtsp_push or rtmp) as the RTSP password (any
// user; Basic or Digest), as the user name, or ?key=, or an access token with the publish grant as the password
// (Basic) or ?token=; a play needs a token with the subscribe grant. A request without
// credentials gets a 401 challenge (reported as auth.failed missing_token if the connection
// ends without being admitted); wrong credentials get 401 (403 for a grant that does not
// cover the room), auth.failed, and the connection is closed.
//
// On refusal it returns the response to send and the error for gortsplib.
func (s *Server) authorize(sc *gortsplib.ServerConn, req *base.Request, path, query string, action auth.Action) (target, *base.Response, error) {
	room, identity, err := parsePath(path)
	if err != nil {
		return target{}, &base.Response{StatusCode: base.StatusBadRequest}, err
	}
	t := target{room: room, identity: identity}
	if s.opts.Gate.OpenMode() {
		s.admitted(sc)
		return t, nil, nil
	}
	remote := remoteAddr(sc)
	q, _ := url.ParseQuery(query)
	var hdr headers.Authorization
	provided := hdr.Unmarshal(req.Header["Authorization"]) == nil && hdr.Username != ""
	switch {
	case q.Get("key") != "":
		return s.admitSecret(sc, t, q.Get("key"), action, remote)
	case q.Get("token") != "":
		return s.admitSecret(sc, t, q.Get("token"), action, remote)
	case provided && s.keys.IsKey(hdr.Username):
		// The key as the user name (DESIGN.md: "key as user/password"); with Digest the user
		// name travels in clear, so it is a bearer credential like ?key=.
		return s.admitSecret(sc, t, hdr.Username, action, remote)
	case provided && hdr.Method == headers.AuthMethodBasic:
		return s.admitSecret(sc, t, hdr.BasicPass, action, remote)
	case provided && hdr.Method == headers.AuthMethodDigest:
		// Digest never sends the password: try the keys of the room's push ingests.
		if action == auth.ActionPublish {
			for _, ing := range s.opts.Ingests.List() {
				if s.keys.Takes(ing) && ing.Room == room && ing.StreamKey != "" &&
					sc.VerifyCredentials(req, hdr.Username, ing.StreamKey) {
					return s.admitSecret(sc, t, ing.StreamKey, action, remote)
				}
			}
		}
		s.refuse(sc, auth.ErrUnknownKey, remote)
		return target{}, &base.Response{StatusCode: base.StatusUnauthorized}, liberrors.ErrServerAuth{}
	}
	// No credentials: challenge. VerifyCredentials makes the connection's digest nonce that the
	// WWW-Authenticate header of the 401 carries.
	_ = sc.VerifyCredentials(req, "sluice", "")
	s.challenged(sc)
	return target{}, &base.Response{StatusCode: base.StatusUnauthorized}, liberrors.ErrServerAuth{}
}

// admitSecret checks a stream key or an access token with the shared key rules (ingest.Keys):
// a key of a push ingest (rtsp_push or rtmp) publishes into its room; a token needs the grant
// for action in the path's room. A refusal is 401, or 403 for credentials that do not cover
// what was asked.
func (s *Server) admitSecret(sc *gortsplib.ServerConn, t target, secret string, action auth.Action, remote string) (target, *base.Response, error) {
	g, err := s.keys.Authorize(ingest.Request{Action: action, Room: t.room, Identity: t.identity, Secret: secret,
		Remote: remote, Protocol: sfu.ProtocolRTSP})
	if err != nil {
		s.connMark(sc, func(cs *connState) { cs.refused = true })
		if errors.Is(err, auth.ErrPermissionDenied) {
			return target{}, &base.Response{StatusCode: base.StatusForbidden}, errForbidden
		}
		return target{}, &base.Response{StatusCode: base.StatusUnauthorized}, liberrors.ErrServerAuth{}
	}
	t.identity, t.self = g.Identity, g.Self
	if g.Ingest != nil {
		t.ingestID, t.ingestType = g.Ingest.ID, g.Ingest.Type
	}
	s.admitted(sc)
	return t, nil, nil
}

// errForbidden closes a connection whose credentials do not cover what it asked.
var errForbidden = errors.New("the credentials do not allow this")

func remoteAddr(sc *gortsplib.ServerConn) string {
	if sc == nil || sc.NetConn() == nil {
		return ""
	}
	return sc.NetConn().RemoteAddr().String()
}

// refuse reports a refused attempt (auth.failed) and remembers it for the connection.
func (s *Server) refuse(sc *gortsplib.ServerConn, err error, remote string) {
	s.opts.Gate.Refused(err, sfu.ProtocolRTSP, remote)
	s.connMark(sc, func(cs *connState) { cs.refused = true })
}

func (s *Server) challenged(sc *gortsplib.ServerConn) {
	s.connMark(sc, func(cs *connState) { cs.challenged = true })
}

func (s *Server) admitted(sc *gortsplib.ServerConn) {
	s.connMark(sc, func(cs *connState) { cs.admitted = true })
}

func (s *Server) connMark(sc *gortsplib.ServerConn, mark func(*connState)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cs := s.conns[sc]; cs != nil {
		mark(cs)
	}
}
