package ingest

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/sluice-media/sluice/sfu"
)

// Errors of Publishers.Admit.
var (
	ErrKeyInUse      = errors.New("the stream key is already publishing")
	ErrIdentityInUse = errors.New("the identity is taken in the room")
	ErrShutdown      = errors.New("the server is shutting down")
)

// StateSetter records the state of an ingest (*Store does).
type StateSetter interface {
	SetState(id, state string, retries int, reason string, cause error)
}

// Publishers admits the publish sessions of one protocol under the rule "one live publisher
// per key" (Grant.Lock): a second publisher on a live key is refused, unless the key's ingest
// allows a takeover, in which case the old session ends (duplicate_identity) first. It keeps the
// state of the ingests whose keys its sessions hold. Methods are safe for concurrent use;
// none holds a lock across an event emit.
type Publishers struct {
	hub     *sfu.Hub
	ingests StateSetter // nil: no ingests
	kind    string      // participant kind
	log     *slog.Logger

	// admitMu serializes admissions (lookup, takeover, join) and Stop's lookup.
	admitMu sync.Mutex

	mu     sync.Mutex
	closed bool
	live   map[string]*Publisher // lock -> live session
}

// Publisher is one admitted publish session: its grant and its participant.
type Publisher struct {
	Grant Grant
	P     *sfu.Participant

	kill    func(reason string)
	release sync.Once
	done    chan struct{} // closed once released
}

// Done is closed once the session has been released.
func (p *Publisher) Done() <-chan struct{} { return p.done }

// NewPublishers returns the admissions of a protocol whose participants are of kind; a nil
// log discards.
func NewPublishers(hub *sfu.Hub, ingests StateSetter, kind string, log *slog.Logger) *Publishers {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Publishers{hub: hub, ingests: ingests, kind: kind, log: log, live: map[string]*Publisher{}}
}

// Admit makes a session the live publisher of g, joining g.Room as g.Identity from remote
// over protocol. kill ends the session from any goroutine (its owner then calls
// Release). Refusals of a live key or identity are reported as auth.failed (permission_denied)
// and returned as ErrKeyInUse or ErrIdentityInUse; after Close it returns ErrShutdown.
func (ps *Publishers) Admit(g Grant, remote, protocol string, kill func(reason string)) (*Publisher, error) {
	ps.admitMu.Lock()
	defer ps.admitMu.Unlock()
	pub := &Publisher{Grant: g, kill: kill, done: make(chan struct{})}
	override := g.Ingest != nil && g.Ingest.Override
	ps.mu.Lock()
	if ps.closed {
		ps.mu.Unlock()
		return nil, ErrShutdown
	}
	old := ps.live[g.Lock]
	if old != nil && !override {
		ps.mu.Unlock()
		ps.refusedInUse(remote, protocol, "stream_key_in_use", ErrKeyInUse)
		return nil, ErrKeyInUse
	}
	ps.live[g.Lock] = pub // claimed now, so that the old session does not report the key free
	ps.mu.Unlock()
	if old != nil {
		ps.log.Info(protocol+" publisher takes over a live key", "room", g.Room, "remote_addr", remote)
		old.kill(sfu.ReasonDuplicateIdentity)
		old.P.Close(sfu.ReasonDuplicateIdentity, nil)
	}
	p, err := ps.hub.Join(g.Room, sfu.ParticipantSpec{Identity: g.Identity, Kind: ps.kind, RemoteAddr: remote, RefuseDuplicate: true})
	if err != nil {
		if ps.unlock(pub) && old != nil && g.Ingest != nil && ps.ingests != nil {
			ps.ingests.SetState(g.Ingest.ID, StateDisconnected, 0, sfu.ReasonError, err)
		}
		close(pub.done)
		if errors.Is(err, sfu.ErrDuplicateIdentity) {
			ps.refusedInUse(remote, protocol, "identity_in_use", ErrIdentityInUse)
			return nil, ErrIdentityInUse
		}
		return nil, err
	}
	pub.P = p
	if g.Ingest != nil && ps.ingests != nil {
		ps.ingests.SetState(g.Ingest.ID, StateConnected, 0, "", nil)
	}
	return pub, nil
}

// Release ends an admitted session (idempotent): its participant leaves with reason
// (stream.failed when err is set), its key is freed, and its ingest, if the session still held
// the key, becomes disconnected.
func (ps *Publishers) Release(pub *Publisher, reason string, err error) {
	pub.release.Do(func() {
		pub.P.Close(reason, err)
		if ps.unlock(pub) && pub.Grant.Ingest != nil && ps.ingests != nil {
			ps.ingests.SetState(pub.Grant.Ingest.ID, StateDisconnected, 0, reason, err)
		}
		close(pub.done)
	})
}

// unlock drops pub from the live keys if it is still the one there, and reports whether it was.
func (ps *Publishers) unlock(pub *Publisher) bool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.live[pub.Grant.Lock] != pub {
		return false
	}
	delete(ps.live, pub.Grant.Lock)
	return true
}

// Stop ends the live session of an ingest (reason removed) and waits for it to be released:
// Handler.Stop of the protocols whose ingests hold stream keys.
func (ps *Publishers) Stop(id string) {
	ps.admitMu.Lock()
	ps.mu.Lock()
	pub := ps.live["i/"+id]
	ps.mu.Unlock()
	ps.admitMu.Unlock()
	if pub == nil {
		return
	}
	pub.kill(sfu.ReasonRemoved)
	select {
	case <-pub.done:
	case <-time.After(15 * time.Second):
		ps.log.Warn(ps.kind+" session did not end within 15 s of its ingest's deletion", "ingest", id)
	}
}

// Close refuses every later admission (ErrShutdown); the live sessions are their owners' to end.
func (ps *Publishers) Close() {
	ps.mu.Lock()
	ps.closed = true
	ps.mu.Unlock()
}

// Len returns the number of live publish sessions.
func (ps *Publishers) Len() int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return len(ps.live)
}

// refusedInUse reports a publish refused because its key or identity is live (auth.failed,
// reason permission_denied, with the precise cause as the error).
func (ps *Publishers) refusedInUse(remote, protocol, code string, err error) {
	ps.hub.Emitter().Emit(&sfu.Event{
		Type:       sfu.EventAuthFailed,
		Reason:     sfu.AuthPermissionDenied,
		RemoteAddr: remote,
		Protocol:   protocol,
		Error:      &sfu.ErrorInfo{Code: code, Message: err.Error()},
	})
}
