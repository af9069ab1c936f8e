package api

import (
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
)

// A flood of refusals from one address is reported as a burst of events and then one a second;
// other addresses are unaffected, and every refusal is counted.
func TestRefusalsAreRateLimitedPerAddress(t *testing.T) {
	em := sfu.NewLocalEmitter(0, nil)
	g := NewGate(auth.NewVerifier(auth.Config{Keys: map[string]string{"k": "0123456789abcdef0123456789abcdef"}}, nil), em)
	now := time.Unix(1000, 0)
	g.limiter.clock = func() time.Time { return now }
	for range 1000 {
		g.Refused(auth.ErrInvalidToken, "rtmp", "198.51.100.7:4000")
	}
	g.Refused(auth.ErrMissingToken, "http", "203.0.113.1:5000")
	if n := len(em.Events(0)); n != refusalBurst+1 {
		t.Fatalf("%d events, want the burst of %d plus the other address", n, refusalBurst)
	}
	now = now.Add(3 * time.Second)
	g.Refused(auth.ErrInvalidToken, "rtmp", "198.51.100.7:4001")
	g.Refused(auth.ErrInvalidToken, "rtmp", "198.51.100.7:4002")
	if n := len(em.Events(0)); n != refusalBurst+3 {
		t.Fatalf("%d events after 3 s, want 2 more", n)
	}
	total, unreported := g.Refusals()
	if total != 1003 || unreported != 1003-uint64(refusalBurst+3) {
		t.Fatalf("refusals %d, unreported %d", total, unreported)
	}
}
