package srt

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	gosrt "github.com/datarhei/gosrt"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
)

// target is what an authorized stream id asks for.
type target struct {
	mode           string
	room, identity string
	ingestID       string // the srt ingest of the key, if any
	override       bool   // a new publisher takes over a live key
	// lock names the key for "one live publisher per key": i/<ingest>, n/<room>/<identity>
	// (open mode) or t/<room>/<identity> (tokens).
	lock string
}

// refusal is a connection request the server rejects, and the rejection code the peer sees.
type refusal struct {
	code gosrt.RejectionReason
	err  error // for the log: never a key, a token or a passphrase
}

var (
	errBadKey     = auth.ErrUnknownKey
	errPassphrase = fmt.Errorf("%w: wrong or missing passphrase", auth.ErrPermissionDenied)
	errEncrypted  = fmt.Errorf("%w: the connection is encrypted but no passphrase is configured for it", auth.ErrPermissionDenied)
	errKeyInUse   = errors.New("the stream key is already publishing")
	errIdentity   = errors.New("the identity is taken in the room")
	errShutdown   = errors.New("the server is shutting down")
)

// keyHash identifies a secret in logs without revealing it.
func keyHash(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:4])
}

// authorize maps a connection request to its target and checks its passphrase. The rules are
// those of RTMP stream keys: an srt ingest's stream key; with auth keys configured, otherwise
// an access token with the grant for the mode (publish or subscribe) in its room; in open mode,
// otherwise the room (and identity) named. Refusals emit auth.failed.
func (s *Server) authorize(req gosrt.ConnRequest, remote string) (target, *refusal) {
	refuse := func(code gosrt.RejectionReason, err error) (target, *refusal) {
		s.gate.Refused(err, sfu.ProtocolSRT, remote)
		return target{}, &refusal{code: code, err: err}
	}
	if req.Version() < 5 {
		return refuse(gosrt.REJ_VERSION, fmt.Errorf("%w: SRT version 4 carries no stream id", auth.ErrUnknownKey))
	}
	id, err := parseStreamID(req.StreamId())
	if err != nil {
		return refuse(gosrt.REJX_BAD_REQUEST, fmt.Errorf("%w: %w", auth.ErrUnknownKey, err))
	}
	t, passphrase, rej := s.resolve(id, remote)
	if rej != nil {
		return target{}, rej
	}
	if passphrase == "" {
		passphrase = s.cfg.Passphrase
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
	return t, nil
}

// resolve applies the key and token rules to a parsed stream id; it returns the target and
// the passphrase of its ingest, if any.
func (s *Server) resolve(id streamID, remote string) (target, string, *refusal) {
	refuse := func(err error) (target, string, *refusal) {
		s.gate.Refused(err, sfu.ProtocolSRT, remote)
		code := gosrt.REJX_UNAUTHORIZED
		if errors.Is(err, auth.ErrPermissionDenied) {
			code = gosrt.REJX_FORBIDDEN
		}
		return target{}, "", &refusal{code: code, err: err}
	}
	if id.secret != "" && s.ingests != nil {
		if ing, ok := s.ingests.ByStreamKey(id.secret); ok && ing.Type == ingest.TypeSRT {
			if id.mode != modePublish {
				return refuse(fmt.Errorf("%w: a stream key publishes; reading takes a token", auth.ErrPermissionDenied))
			}
			if id.room != "" && id.room != ing.Room {
				return refuse(fmt.Errorf("%w: the stream key is for another room", auth.ErrPermissionDenied))
			}
			identity := ing.Identity
			if identity == "" {
				identity = ing.ID
			}
			return target{mode: modePublish, room: ing.Room, identity: identity, ingestID: ing.ID,
				override: ing.Override, lock: ingestLock(ing.ID)}, ing.Passphrase, nil
		}
	}
	action := auth.ActionPublish
	if id.mode == modeRead {
		action = auth.ActionSubscribe
	}
	if !s.gate.OpenMode() {
		if id.secret == "" || strings.HasPrefix(id.secret, streamKeyPrefix) || !isSecret(id.secret) || len(id.secret) > 4096 {
			return refuse(fmt.Errorf("%w (sha256 %s)", errBadKey, keyHash(id.secret)))
		}
		claims, err := s.gate.Verifier().Verify(id.secret)
		room := id.room
		if err == nil && room == "" {
			room = claims.Grants.Room
		}
		if err == nil && (room == "" || !claims.Allows(action, room)) {
			err = fmt.Errorf("%w: the token does not allow %s in the room", auth.ErrPermissionDenied, id.mode)
		}
		if err != nil {
			return refuse(err)
		}
		identity := claims.Identity
		if identity == "" {
			identity = id.identity
		}
		lock := "t/" + room + "/" + identity
		if identity == "" {
			lock = "t/" + room + "/#" + keyHash(id.secret)
		}
		return target{mode: id.mode, room: room, identity: identity, lock: lock}, "", nil
	}
	if id.room == "" {
		// A key-shaped stream id that is no ingest's (deleted, mistyped): never a room name.
		return refuse(fmt.Errorf("%w (sha256 %s)", errBadKey, keyHash(id.secret)))
	}
	err := sfu.ValidateName(id.room)
	if err == nil && id.identity != "" {
		err = sfu.ValidateName(id.identity)
	}
	if err != nil {
		return refuse(fmt.Errorf("%w: %w", auth.ErrUnknownKey, err))
	}
	return target{mode: id.mode, room: id.room, identity: id.identity, lock: "n/" + id.room + "/" + id.identity}, "", nil
}

// admit makes a publish session the live publisher of t: a second publisher on a live key is
// refused unless the ingest allows a takeover, in which case the old session ends
// (duplicate_identity) first. The session joins the room as a participant of kind srt.
func (s *Server) admit(t target, remote string) (*session, *refusal) {
	s.admitMu.Lock()
	defer s.admitMu.Unlock()
	sess := &session{lock: t.lock, ingestID: t.ingestID, done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, &refusal{code: gosrt.REJX_DOWN, err: errShutdown}
	}
	old := s.live[t.lock]
	if old != nil && !t.override {
		s.mu.Unlock()
		s.refusedInUse(remote, "stream_key_in_use", errKeyInUse)
		return nil, &refusal{code: gosrt.REJX_CONFLICT, err: errKeyInUse}
	}
	s.live[t.lock] = sess
	s.sessions[sess] = struct{}{}
	s.mu.Unlock()
	if old != nil {
		old.kill(sfu.ReasonDuplicateIdentity, nil)
		<-old.done
	}
	p, err := s.hub.Join(t.room, sfu.ParticipantSpec{
		Identity: t.identity, Kind: sfu.ParticipantSRT, RemoteAddr: remote, RefuseDuplicate: true,
	})
	if err != nil {
		s.release(sess)
		close(sess.done)
		if errors.Is(err, sfu.ErrDuplicateIdentity) {
			s.refusedInUse(remote, "identity_in_use", errIdentity)
			return nil, &refusal{code: gosrt.REJX_CONFLICT, err: errIdentity}
		}
		return nil, &refusal{code: gosrt.REJX_ISE, err: err}
	}
	sess.p = p
	return sess, nil
}

// refusedInUse reports a publish refused because its key or identity is live (auth.failed,
// reason permission_denied, with the precise cause as the error).
func (s *Server) refusedInUse(remote, code string, err error) {
	s.hub.Emitter().Emit(&sfu.Event{
		Type:       sfu.EventAuthFailed,
		Reason:     sfu.AuthPermissionDenied,
		RemoteAddr: remote,
		Protocol:   sfu.ProtocolSRT,
		Error:      &sfu.ErrorInfo{Code: code, Message: err.Error()},
	})
}

// release drops sess from the live keys if it is still the one there, and reports whether it
// was (the session that owns a key reports its ingest's state).
func (s *Server) release(sess *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, sess)
	if s.live[sess.lock] != sess {
		return false
	}
	delete(s.live, sess.lock)
	return true
}
