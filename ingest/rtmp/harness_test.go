package rtmp

import (
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/ingest/ingesttest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// harness is the test daemon core (ingesttest) with an RTMP server on a loopback port.
type harness struct {
	*ingesttest.Harness
	srv  *Server
	addr string
}

type harnessOptions struct {
	config func(*Config)
	auth   auth.Config
}

func newHarness(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	b := ingesttest.New(t, ingesttest.Options{Auth: o.auth})
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.RTMPSListen = "127.0.0.1:0"
	if o.config != nil {
		o.config(&cfg)
	}
	srv, err := NewServer(Options{Config: cfg, Hub: b.Hub, Gate: b.Gate, Ingests: b.Store, Logger: b.Log})
	must(t, err)
	must(t, srv.Listen())
	b.Store.Register(ingest.TypeRTMP, srv)
	b.Serve(srv, &srv.panics)
	return &harness{Harness: b, srv: srv, addr: srv.Addr().String()}
}

var (
	is       = ingesttest.Is
	isReason = ingesttest.IsReason
	must     = ingesttest.Must
)

func trackOf(t *testing.T, p *sfu.Participant, kind sfu.Kind) *sfu.Track {
	t.Helper()
	return ingesttest.TrackOf(t, p, kind)
}

// packets counts a track's packets as it flows (the check that a session is untouched).
func packetsOf(t *sfu.Track) uint64 {
	var n uint64
	for _, st := range t.Participant().Room().Status().Participants {
		for _, tr := range st.Tracks {
			if tr.SID == t.SID() {
				n = tr.PacketsIn
			}
		}
	}
	return n
}

// flowing fails unless the track receives packets within d.
func flowing(t *testing.T, tr *sfu.Track, d time.Duration) {
	t.Helper()
	start := packetsOf(tr)
	sfutest.WaitFor(t, "packets on "+tr.SID(), d, func() bool { return packetsOf(tr) > start+10 })
}

// sink records the packets of a subscription.
type sink struct {
	mu   sync.Mutex
	pkts []*sfu.Packet
}

func (s *sink) WritePacket(p *sfu.Packet, _ bool) error {
	s.mu.Lock()
	s.pkts = append(s.pkts, p)
	s.mu.Unlock()
	return nil
}

func (s *sink) all() []*sfu.Packet {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*sfu.Packet(nil), s.pkts...)
}
