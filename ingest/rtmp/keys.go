package rtmp

import (
	"errors"
	"strings"

	"github.com/yutopp/go-rtmp/message"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
)

// refusal is a publish the server turns down, and how it tells the client.
type refusal struct {
	code message.NetStreamOnStatusCode
	desc string // sent to the client: never the key
	err  error  // for the log: never the key
}

func (r *refusal) Error() string { return r.err.Error() }

var errPublished = errors.New("this connection already published")

func badName(desc string, err error) *refusal {
	return &refusal{code: message.NetStreamOnStatusCodePublishBadName, desc: desc, err: err}
}

// resolve maps a publish name to what it may publish with the shared key rules (ingest.Keys):
// the name is an RTMP ingest's stream key, or an access token with a publish grant for its
// room, or in open mode <room>[/<identity>]. Refusals emit auth.failed.
func (s *Server) resolve(name string, c *conn) (ingest.Grant, *refusal) {
	key, _, _ := strings.Cut(name, "?") // some encoders append query parameters
	r := ingest.Request{Action: auth.ActionPublish, Secret: key, Remote: c.remote, Protocol: c.protocol}
	if s.gate.OpenMode() && !ingest.IsSecret(key) {
		r.Room, r.Identity, _ = strings.Cut(key, "/")
	}
	g, err := s.keys.Authorize(r)
	switch {
	case err == nil:
		return g, nil
	case errors.Is(err, auth.ErrUnknownKey) && r.Room != "":
		return g, badName("The stream key must be <room> or <room>/<identity>.", err)
	case errors.Is(err, auth.ErrUnknownKey):
		return g, badName("Unknown stream key.", err)
	}
	return g, badName("The stream key is not a valid token for publishing.", err)
}

// admit makes c the live publisher of g (ingest.Publishers: one live publisher per key).
func (s *Server) admit(c *conn, g ingest.Grant) (*session, *refusal) {
	pub, err := s.pubs.Admit(g, c.remote, c.protocol, func(reason string) { c.kill(reason, nil) })
	switch {
	case err == nil:
		return &session{Publisher: pub}, nil
	case errors.Is(err, ingest.ErrKeyInUse):
		return nil, badName("This stream key is already publishing.", err)
	case errors.Is(err, ingest.ErrIdentityInUse):
		return nil, badName("The identity is taken in the room.", err)
	case errors.Is(err, ingest.ErrShutdown):
		return nil, &refusal{code: message.NetStreamOnStatusCodePublishFailed, desc: "The server is shutting down.", err: err}
	case errors.Is(err, sfu.ErrOverloaded):
		return nil, &refusal{code: message.NetStreamOnStatusCodePublishFailed, desc: "The server is overloaded; try again later.", err: err}
	}
	return nil, &refusal{code: message.NetStreamOnStatusCodePublishFailed, desc: "The room cannot be joined.", err: err}
}

// session is one admitted publish.
type session struct {
	*ingest.Publisher
	ended bool // owned by the connection goroutine
}

// ingestID is the ingest whose key the session holds, "" for none.
func (sess *session) ingestID() string {
	if sess.Grant.Ingest == nil {
		return ""
	}
	return sess.Grant.Ingest.ID
}
