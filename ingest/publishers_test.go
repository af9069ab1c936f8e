package ingest

import (
	"errors"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// One live publisher per key: a second one is refused (auth.failed, stream_key_in_use) unless
// the key's ingest allows a takeover, which ends the first (duplicate_identity) while the ingest
// stays connected; Stop ends the live session of an ingest; after Close nothing is admitted.
func TestPublishers(t *testing.T) {
	hub, em := sfutest.NewHub(t, nil)
	sfutest.RunHub(t, hub)
	store, err := Open(t.TempDir(), nil, em, nil)
	if err != nil {
		t.Fatal(err)
	}
	ing, _ := store.Create(Definition{Type: TypeSRT, Room: "studio", Identity: "obs", Override: true}, time.Now())
	ps := NewPublishers(hub, store, sfu.ParticipantSRT, nil)
	kills := map[string]string{}
	admit := func(g Grant, name string) (*Publisher, error) {
		var pub *Publisher
		var err error
		pub, err = ps.Admit(g, "192.0.2.1:1", sfu.ProtocolSRT, func(reason string) {
			kills[name] = reason
			go ps.Release(pub, reason, nil) // the session's owner releases it
		})
		return pub, err
	}

	open := Grant{Room: "studio", Identity: "cam", Lock: "n/studio/cam"}
	a, err := admit(open, "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admit(open, "b"); !errors.Is(err, ErrKeyInUse) {
		t.Fatalf("a second publisher on a live key: %v", err)
	}
	sfutest.WaitFor(t, "auth.failed stream_key_in_use", 5*time.Second, func() bool {
		for _, e := range em.Events(0) {
			if e.Type == sfu.EventAuthFailed && e.Error != nil && e.Error.Code == "stream_key_in_use" {
				return true
			}
		}
		return false
	})
	ps.Release(a, sfu.ReasonClientDisconnected, nil)
	if ps.Len() != 0 {
		t.Fatalf("%d live after the release", ps.Len())
	}

	key := Grant{Room: "studio", Identity: "obs", Ingest: &ing, Lock: "i/" + ing.ID}
	first, err := admit(key, "first")
	if err != nil {
		t.Fatal(err)
	}
	second, err := admit(key, "second")
	if err != nil {
		t.Fatalf("a takeover: %v", err)
	}
	<-first.Done()
	if kills["first"] != sfu.ReasonDuplicateIdentity || first.P.LeaveReason() != sfu.ReasonDuplicateIdentity {
		t.Errorf("the replaced session: kill %q, left %q", kills["first"], first.P.LeaveReason())
	}
	if got, _ := store.Get(ing.ID); got.State != StateConnected {
		t.Errorf("the ingest is %s after the takeover", got.State)
	}
	ps.Stop(ing.ID)
	if kills["second"] != sfu.ReasonRemoved {
		t.Errorf("Stop: kill %q", kills["second"])
	}
	<-second.Done()
	if got, _ := store.Get(ing.ID); got.State != StateDisconnected {
		t.Errorf("the ingest is %s after Stop", got.State)
	}
	ps.Close()
	if _, err := admit(open, "late"); !errors.Is(err, ErrShutdown) {
		t.Fatalf("after Close: %v", err)
	}
}
