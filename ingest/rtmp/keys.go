package rtmp

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/yutopp/go-rtmp/message"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
)

// target is where a publish goes, from its stream key.
type target struct {
	room, identity string
	ingestID       string // the RTMP ingest of the key, if any
	override       bool   // a new publisher takes over a live key
	// lock names the key for "one live publisher per key": i/<ingest>, n/<room>/<identity>
	// (open mode) or t/<room>/<identity> (tokens).
	lock string
}

// refusal is a publish the server turns down, and how it tells the client.
type refusal struct {
	code message.NetStreamOnStatusCode
	desc string // sent to the client: never the key
	err  error  // for the log: never the key
}

func (r *refusal) Error() string { return r.err.Error() }

var (
	errBadKey    = errors.New("unknown stream key")
	errKeyInUse  = errors.New("the stream key is already publishing")
	errIdentity  = errors.New("the identity is taken in the room")
	errShutdown  = errors.New("the server is shutting down")
	errPublished = errors.New("this connection already published")
)

func badName(desc string, err error) *refusal {
	return &refusal{code: message.NetStreamOnStatusCodePublishBadName, desc: desc, err: err}
}

// streamKeyPrefix starts the stream keys the ingest store generates.
const streamKeyPrefix = "sk_"

// keyHash identifies a stream key in logs without revealing it.
func keyHash(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:4])
}

// resolve maps a publish name to its target (DESIGN.md "Ports and URLs"): an RTMP ingest's
// stream key; with auth keys configured, otherwise an access token with a publish grant for
// its room; in open mode, otherwise <room> or <room>/<identity>. Refusals emit auth.failed.
func (s *Server) resolve(name string, c *conn) (target, *refusal) {
	key, _, _ := strings.Cut(name, "?") // some encoders append query parameters
	if s.ingests != nil {
		if ing, ok := s.ingests.ByStreamKey(key); ok && ing.Type == ingest.TypeRTMP {
			identity := ing.Identity
			if identity == "" {
				identity = ing.ID // stable and known to the user
			}
			return target{room: ing.Room, identity: identity, ingestID: ing.ID, override: ing.Override, lock: ingestLock(ing.ID)}, nil
		}
	}
	if !s.gate.OpenMode() {
		if strings.Count(key, ".") != 2 {
			s.gate.Refused(auth.ErrUnknownKey, c.protocol, c.remote)
			return target{}, badName("Unknown stream key.", fmt.Errorf("%w (sha256 %s)", errBadKey, keyHash(key)))
		}
		claims, err := s.gate.Verifier().Verify(key)
		if err == nil && (claims.Grants.Room == "" || !claims.Allows(auth.ActionPublish, claims.Grants.Room)) {
			err = fmt.Errorf("%w: the token does not allow publishing to one room", auth.ErrPermissionDenied)
		}
		if err != nil {
			s.gate.Refused(err, c.protocol, c.remote)
			return target{}, badName("The stream key is not a valid token for publishing.", err)
		}
		room, identity := claims.Grants.Room, claims.Identity
		lock := "t/" + room + "/" + identity
		if identity == "" {
			lock = "t/" + room + "/#" + keyHash(key)
		}
		return target{room: room, identity: identity, lock: lock}, nil
	}
	if strings.HasPrefix(key, streamKeyPrefix) {
		// Shaped like a generated stream key (a deleted one, a typo): never a room name, so
		// that a key does not become a room, and reach logs and events as one.
		s.gate.Refused(auth.ErrUnknownKey, c.protocol, c.remote)
		return target{}, badName("Unknown stream key.", fmt.Errorf("%w (sha256 %s)", errBadKey, keyHash(key)))
	}
	room, identity, _ := strings.Cut(key, "/")
	err := sfu.ValidateName(room)
	if err == nil && identity != "" {
		err = sfu.ValidateName(identity)
	}
	if err != nil {
		s.gate.Refused(auth.ErrUnknownKey, c.protocol, c.remote)
		return target{}, badName("The stream key must be <room> or <room>/<identity>.", fmt.Errorf("%w: %w", errBadKey, err))
	}
	return target{room: room, identity: identity, lock: "n/" + room + "/" + identity}, nil
}

// admit makes c the live publisher of t: it refuses a second publisher on a live key unless
// the ingest allows a takeover, in which case the old session ends (duplicate_identity)
// before the new one joins.
func (s *Server) admit(c *conn, t target) (*session, *refusal) {
	s.admitMu.Lock()
	defer s.admitMu.Unlock()
	sess := &session{c: c, lock: t.lock, ingestID: t.ingestID, done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, &refusal{code: message.NetStreamOnStatusCodePublishFailed, desc: "The server is shutting down.", err: errShutdown}
	}
	old := s.live[t.lock]
	if old != nil && !t.override {
		s.mu.Unlock()
		s.refusedInUse(c, "stream_key_in_use", errKeyInUse)
		return nil, badName("This stream key is already publishing.", errKeyInUse)
	}
	s.live[t.lock] = sess // claimed now, so that the old session does not report the key free
	s.mu.Unlock()
	if old != nil {
		c.log.Info("rtmp publisher takes over a live key", "replaced", old.c.remote)
		old.c.kill(sfu.ReasonDuplicateIdentity, nil)
		if old.p != nil {
			old.p.Close(sfu.ReasonDuplicateIdentity, nil)
		}
	}
	p, err := s.hub.Join(t.room, sfu.ParticipantSpec{
		Identity: t.identity, Kind: sfu.ParticipantRTMP, RemoteAddr: c.remote, RefuseDuplicate: true,
	})
	if err != nil {
		owner := s.release(sess)
		if owner && old != nil && t.ingestID != "" && s.ingests != nil {
			s.ingests.SetState(t.ingestID, ingest.StateDisconnected, 0, sfu.ReasonError, err)
		}
		if errors.Is(err, sfu.ErrDuplicateIdentity) {
			s.refusedInUse(c, "identity_in_use", errIdentity)
			return nil, badName("The identity is taken in the room.", errIdentity)
		}
		return nil, &refusal{code: message.NetStreamOnStatusCodePublishFailed, desc: "The room cannot be joined.", err: err}
	}
	sess.p = p
	if t.ingestID != "" && s.ingests != nil {
		s.ingests.SetState(t.ingestID, ingest.StateConnected, 0, "", nil)
	}
	return sess, nil
}

// refusedInUse reports a publish refused because its key or identity is live (auth.failed,
// reason permission_denied, with the precise cause as the error).
func (s *Server) refusedInUse(c *conn, code string, err error) {
	s.hub.Emitter().Emit(&sfu.Event{
		Type:       sfu.EventAuthFailed,
		Reason:     sfu.AuthPermissionDenied,
		RemoteAddr: c.remote,
		Protocol:   c.protocol,
		Error:      &sfu.ErrorInfo{Code: code, Message: err.Error()},
	})
}

// session is one admitted publish: its participant and the key it holds.
type session struct {
	c        *conn
	lock     string
	ingestID string
	p        *sfu.Participant
	ended    bool          // owned by the connection goroutine
	done     chan struct{} // closed once the session is released
}
