package ingest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/auth"
)

// StreamKeyPrefix starts every stream key the store generates.
const StreamKeyPrefix = "sk_"

// maxSecret bounds the stream keys and tokens that are looked at at all.
const maxSecret = 8192

// KeyHash identifies a secret (a stream key, a token) in logs and errors without revealing it.
func KeyHash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:4])
}

// IsToken reports whether s is shaped like an access token (a JWT: three dot-separated parts).
func IsToken(s string) bool { return strings.Count(s, ".") == 2 }

// IsSecret reports whether s is a stream key or an access token rather than a room name.
func IsSecret(s string) bool { return strings.HasPrefix(s, StreamKeyPrefix) || IsToken(s) }

// KeyLookup finds the ingest of a stream key (*Store does).
type KeyLookup interface {
	ByStreamKey(key string) (Ingest, bool)
}

// Keys applies the key rules of DESIGN.md ("Ports and URLs") that RTMP, RTSP and SRT share:
// a stream key of one of Types publishes into its ingest's room; with auth keys configured,
// otherwise an access token with the grant for the action in the room; in open mode, otherwise
// the room (and identity) named. Refusals are reported as auth.failed through the Gate. Keys is
// a value that is safe for concurrent use.
type Keys struct {
	Gate *api.Gate
	// Ingests holds the stream keys; nil when there are none.
	Ingests KeyLookup
	// Types are the ingest types whose stream keys admit publishers here.
	Types []string
}

// Request is what a publisher or a reader presents.
type Request struct {
	Action auth.Action // auth.ActionPublish or auth.ActionSubscribe
	// Room and Identity are named by the URL or stream id; "" when the credential names them.
	// For a reader, Identity is the participant to read ("" for the main publisher).
	Room, Identity string
	// Secret is a stream key or an access token; "" for none.
	Secret string
	// Remote and Protocol are where the request comes from (for auth.failed).
	Remote, Protocol string
}

// Grant is what an admitted request may do.
type Grant struct {
	Room string
	// Identity is a publisher's identity, or the participant a reader reads ("" for the room's
	// main publisher).
	Identity string
	// Self is a reader's own identity, from its token ("" lets the room pick one).
	Self string
	// Ingest is the ingest whose stream key admitted a publisher, nil for none.
	Ingest *Ingest
	// Lock names the key of a publisher for "one live publisher per key" (Publishers):
	// i/<ingest>, t/<room>/<identity> (tokens) or n/<room>/<identity> (open mode).
	Lock string
}

// Authorize applies the rules to r. A refusal is reported (auth.failed) and returned as an error
// wrapping auth.ErrUnknownKey, auth.ErrMissingToken or another auth error (ErrPermissionDenied for
// credentials that do not cover what was asked); its message never holds the secret.
func (k Keys) Authorize(r Request) (Grant, error) {
	if r.Secret != "" && len(r.Secret) <= maxSecret && k.Ingests != nil {
		if ing, ok := k.Ingests.ByStreamKey(r.Secret); ok && k.Takes(ing) {
			return k.ingestKey(r, ing)
		}
	}
	if !k.Gate.OpenMode() {
		return k.token(r)
	}
	if r.Room == "" || strings.HasPrefix(r.Room, StreamKeyPrefix) {
		// A key-shaped name that is no ingest's (deleted, mistyped) is never a room, so that a
		// key does not become a room and reach logs and events as one.
		return k.refuse(r, fmt.Errorf("%w (sha256 %s)", auth.ErrUnknownKey, KeyHash(r.Secret+r.Room)))
	}
	err := sfu.ValidateName(r.Room)
	if err == nil && r.Identity != "" {
		err = sfu.ValidateName(r.Identity)
	}
	if err != nil {
		return k.refuse(r, fmt.Errorf("%w: %w", auth.ErrUnknownKey, err))
	}
	g := Grant{Room: r.Room, Identity: r.Identity}
	if r.Action == auth.ActionPublish {
		g.Lock = "n/" + r.Room + "/" + r.Identity
	}
	return g, nil
}

// Takes reports whether ing's stream key admits publishers here.
func (k Keys) Takes(ing Ingest) bool { return slices.Contains(k.Types, ing.Type) }

// IsKey reports whether key is the stream key of an ingest that publishes here.
func (k Keys) IsKey(key string) bool {
	if k.Ingests == nil || key == "" || len(key) > maxSecret {
		return false
	}
	ing, ok := k.Ingests.ByStreamKey(key)
	return ok && k.Takes(ing)
}

// ingestKey grants a publish with an ingest's stream key: into its room, as its identity (else
// the one named, else the ingest's id, stable and known to the user).
func (k Keys) ingestKey(r Request, ing Ingest) (Grant, error) {
	if r.Action != auth.ActionPublish {
		return k.refuse(r, fmt.Errorf("%w: a stream key publishes; reading takes a token", auth.ErrPermissionDenied))
	}
	if r.Room != "" && r.Room != ing.Room {
		return k.refuse(r, fmt.Errorf("%w: the stream key is for another room", auth.ErrPermissionDenied))
	}
	identity := ing.Identity
	if identity == "" {
		identity = r.Identity
	}
	if identity == "" {
		identity = ing.ID
	}
	return Grant{Room: ing.Room, Identity: identity, Ingest: &ing, Lock: "i/" + ing.ID}, nil
}

// token grants what an access token allows: the room named (else its grant's room), as the
// token's identity.
func (k Keys) token(r Request) (Grant, error) {
	switch {
	case r.Secret == "":
		return k.refuse(r, auth.ErrMissingToken)
	case !IsToken(r.Secret) || len(r.Secret) > maxSecret:
		return k.refuse(r, fmt.Errorf("%w (sha256 %s)", auth.ErrUnknownKey, KeyHash(r.Secret)))
	}
	claims, err := k.Gate.Verifier().Verify(r.Secret)
	room := r.Room
	if err == nil && room == "" {
		room = claims.Grants.Room
	}
	if err == nil && (room == "" || !claims.Allows(r.Action, room)) {
		what := "publishing"
		if r.Action != auth.ActionPublish {
			what = "reading"
		}
		err = fmt.Errorf("%w: the token does not allow %s in the room", auth.ErrPermissionDenied, what)
	}
	if err != nil {
		return k.refuse(r, err)
	}
	if r.Action != auth.ActionPublish {
		return Grant{Room: room, Identity: r.Identity, Self: claims.Identity}, nil
	}
	g := Grant{Room: room, Identity: claims.Identity}
	if g.Identity == "" {
		g.Identity = r.Identity
	}
	g.Lock = "t/" + room + "/" + g.Identity
	if g.Identity == "" {
		g.Lock = "t/" + room + "/#" + KeyHash(r.Secret)
	}
	return g, nil
}

func (k Keys) refuse(r Request, err error) (Grant, error) {
	k.Gate.Refused(err, r.Protocol, r.Remote)
	return Grant{}, err
}
