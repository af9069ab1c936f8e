package srt

import (
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/ingest/ingesttest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
)

// harness is the test daemon core (ingesttest) with an SRT server on a loopback port.
type harness struct {
	*ingesttest.Harness
	srv  *Server
	addr string
}

type harnessOptions struct {
	config func(*Config)
	auth   auth.Config
	stats  time.Duration // stream.stats period (0: none)
}

func newHarness(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	b := ingesttest.New(t, ingesttest.Options{Auth: o.auth, StatsInterval: o.stats})
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	if o.config != nil {
		o.config(&cfg)
	}
	srv, err := NewServer(Options{Config: cfg, Hub: b.Hub, Gate: b.Gate, Ingests: b.Store, Logger: b.Log})
	ingesttest.Must(t, err)
	ingesttest.Must(t, srv.Listen())
	b.Store.Register(ingest.TypeSRT, srv)
	b.Serve(srv, &srv.panics)
	return &harness{Harness: b, srv: srv, addr: srv.Addr().String()}
}

// frames records the RTP timestamps of a video subscription's complete frames (marker bit)
// and whether each started with a keyframe.
type frames struct {
	mu   sync.Mutex
	ts   []uint32
	keys int
}

func (f *frames) WritePacket(p *sfu.Packet, _ bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p.Keyframe {
		f.keys++
	}
	if p.Header.Marker {
		f.ts = append(f.ts, p.Header.Timestamp)
	}
	return nil
}

func (f *frames) snapshot() ([]uint32, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]uint32(nil), f.ts...), f.keys
}
