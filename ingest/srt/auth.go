package srt

import (
	"errors"
	"fmt"

	gosrt "github.com/datarhei/gosrt"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
)

// refusal is a connection request the server rejects, and the rejection code the peer sees.
type refusal struct {
	code gosrt.RejectionReason
	err  error // for the log: never a key, a token or a passphrase
}

var (
	errPassphrase = fmt.Errorf("%w: wrong or missing passphrase", auth.ErrPermissionDenied)
	errEncrypted  = fmt.Errorf("%w: the connection is encrypted but no passphrase is configured for it", auth.ErrPermissionDenied)
)

// authorize maps a connection request to its mode and grant with the key rules of RTMP and WHEP
// (ingest.Keys): an srt ingest's stream key publishes; with auth keys configured, otherwise an
// access token with the grant for the mode (publish or subscribe) in its room; in open mode,
// otherwise the room (and identity) named. Then it checks the passphrase: the ingest's, else
// the server's. Refusals emit auth.failed.
func (s *Server) authorize(req gosrt.ConnRequest, remote string) (streamID, ingest.Grant, *refusal) {
	refuse := func(code gosrt.RejectionReason, err error) (streamID, ingest.Grant, *refusal) {
		s.gate.Refused(err, sfu.ProtocolSRT, remote)
		return streamID{}, ingest.Grant{}, &refusal{code: code, err: err}
	}
	if req.Version() < 5 {
		return refuse(gosrt.REJ_VERSION, fmt.Errorf("%w: SRT version 4 carries no stream id", auth.ErrUnknownKey))
	}
	id, err := parseStreamID(req.StreamId())
	if err != nil {
		return refuse(gosrt.REJX_BAD_REQUEST, fmt.Errorf("%w: %w", auth.ErrUnknownKey, err))
	}
	r := ingest.Request{Action: auth.ActionPublish, Room: id.room, Identity: id.identity, Secret: id.secret,
		Remote: remote, Protocol: sfu.ProtocolSRT}
	if id.mode == modeRead {
		r.Action = auth.ActionSubscribe
	} else if r.Identity == "" {
		r.Identity = id.user
	}
	g, err := s.keys.Authorize(r) // reports its refusals
	if err != nil {
		code := gosrt.REJX_UNAUTHORIZED
		if errors.Is(err, auth.ErrPermissionDenied) {
			code = gosrt.REJX_FORBIDDEN
		}
		return streamID{}, ingest.Grant{}, &refusal{code: code, err: err}
	}
	if id.mode == modeRead && g.Self == "" {
		g.Self = id.user
	}
	passphrase := s.cfg.Passphrase
	if g.Ingest != nil && g.Ingest.Passphrase != "" {
		passphrase = g.Ingest.Passphrase
	}
	switch {
	case passphrase == "" && req.IsEncrypted():
		return refuse(gosrt.REJ_BADSECRET, errEncrypted)
	case passphrase != "" && !req.IsEncrypted():
		return refuse(gosrt.REJ_UNSECURE, errPassphrase)
	case passphrase != "":
		if err := req.SetPassphrase(passphrase); err != nil {
			return refuse(gosrt.REJ_BADSECRET, errPassphrase)
		}
	}
	return id, g, nil
}
