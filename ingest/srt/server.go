package srt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	gosrt "github.com/datarhei/gosrt"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
)

// Ingests is what the server needs of the ingest store: stream key lookup and the state of
// the ingests it serves.
type Ingests interface {
	ByStreamKey(key string) (ingest.Ingest, bool)
	SetState(id, state string, retries int, reason string, cause error)
}

// Options build a Server.
type Options struct {
	Config Config
	Hub    *sfu.Hub
	// Gate decides who may publish and read (open mode, tokens) and reports refusals.
	Gate *api.Gate
	// Ingests holds the stream keys of srt ingests; nil when there are none.
	Ingests Ingests
	Logger  *slog.Logger
}

// Server accepts SRT connections on one UDP port. A publisher's MPEG-TS becomes a participant
// of its room (kind srt); a reader gets the MPEG-TS of the room's main publisher or of an
// identity, as a participant of kind srt that subscribes.
//
// NewServer validates and binds nothing; Listen binds the port; Run serves until its context
// ends, then ends every session (server_shutdown) and waits for them. Close releases the port
// if Run never ran. Server implements ingest.Handler for the srt ingest type: Stop ends the
// live session of an ingest. Methods are safe for concurrent use.
type Server struct {
	cfg     Config
	hub     *sfu.Hub
	gate    *api.Gate
	ingests Ingests
	log     *slog.Logger

	keys ingest.Keys
	pubs *ingest.Publishers

	ln        gosrt.Listener
	closeOnce sync.Once

	mu       sync.Mutex
	closed   bool
	sessions map[*session]struct{} // every accepted connection, publish or play
	perIP    map[string]int
	wg       sync.WaitGroup // the accept loop and every connection

	panics atomic.Uint64 // handler panics (bugs), for tests
}

// NewServer validates opts; it binds and starts nothing.
func NewServer(opts Options) (*Server, error) {
	if err := opts.Config.Validate(); err != nil {
		return nil, fmt.Errorf("srt: %w", err)
	}
	if opts.Hub == nil || opts.Gate == nil {
		return nil, errors.New("srt: a hub and a gate are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{
		cfg: opts.Config, hub: opts.Hub, gate: opts.Gate, ingests: opts.Ingests, log: opts.Logger,
		keys:     ingest.Keys{Gate: opts.Gate, Ingests: opts.Ingests, Types: []string{ingest.TypeSRT}},
		pubs:     ingest.NewPublishers(opts.Hub, opts.Ingests, sfu.ParticipantSRT, opts.Logger),
		sessions: map[*session]struct{}{}, perIP: map[string]int{},
	}, nil
}

// Listen binds the SRT port.
func (s *Server) Listen() error {
	cfg := gosrt.DefaultConfig()
	cfg.ReceiverLatency = s.cfg.Latency
	cfg.PeerLatency = s.cfg.Latency
	cfg.PeerIdleTimeout = s.cfg.ReadTimeout
	ln, err := gosrt.Listen("srt", s.cfg.Listen, cfg)
	if err != nil {
		return fmt.Errorf("srt listen %s: %w", s.cfg.Listen, err)
	}
	s.ln = ln
	return nil
}

// Addr returns the bound UDP address (nil before Listen).
func (s *Server) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Close releases the port and every connection on it; Run does it itself. Idempotent.
func (s *Server) Close() error {
	if s.ln != nil {
		s.closeOnce.Do(s.ln.Close)
	}
	return nil
}

// Run serves the bound port until ctx ends, then ends every session with reason
// server_shutdown and waits for every connection to be released.
func (s *Server) Run(ctx context.Context) error {
	if s.ln == nil {
		return errors.New("srt: Run before Listen")
	}
	s.log.Info("srt listening", "addr", s.ln.Addr().String(), "latency", s.cfg.Latency)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			req, err := s.ln.Accept2()
			if err != nil {
				if !errors.Is(err, gosrt.ErrListenerClosed) {
					s.log.Warn("srt accept", "err", err)
				}
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.handle(req)
			}()
		}
	}()
	<-ctx.Done()
	s.pubs.Close()
	s.mu.Lock()
	s.closed = true
	sessions := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()
	for _, sess := range sessions {
		sess.kill(sfu.ReasonServerShutdown, nil)
	}
	_ = s.Close()
	s.wg.Wait()
	return nil
}

// Start implements ingest.Handler: an srt ingest needs nothing until a publisher comes.
func (s *Server) Start(ingest.Ingest) {}

// Stop implements ingest.Handler: it ends the live session of the ingest (reason removed) and
// waits for it to be released.
func (s *Server) Stop(id string) { s.pubs.Stop(id) }

// Sessions returns the number of live publish sessions.
func (s *Server) Sessions() int { return s.pubs.Len() }

// track registers an accepted connection's session for shutdown; false when the server is
// shutting down.
func (s *Server) track(sess *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.sessions[sess] = struct{}{}
	return true
}

func (s *Server) untrack(sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, sess)
}

// handle decides on one connection request: it reads the stream id, authorizes it, checks the
// passphrase, and serves the connection or rejects it.
func (s *Server) handle(req gosrt.ConnRequest) {
	remote := req.RemoteAddr().String()
	log := s.log.With("remote_addr", remote, "protocol", sfu.ProtocolSRT)
	ip := remoteIP(req.RemoteAddr())
	if !s.takeSlot(ip) {
		log.Warn("srt connection refused: too many connections from one address", "limit", s.cfg.MaxConnsPerIP)
		req.Reject(gosrt.REJX_OVERLOAD)
		return
	}
	defer s.freeSlot(ip)
	id, g, rej := s.authorize(req, remote)
	if rej != nil {
		log.Info("srt connection refused", "reason", rej.err.Error())
		req.Reject(rej.code)
		return
	}
	sess := &session{}
	if !s.track(sess) {
		req.Reject(gosrt.REJX_DOWN)
		return
	}
	defer s.untrack(sess)
	if id.mode == modePublish {
		s.publish(req, sess, g, log)
	} else {
		s.play(req, sess, g, id.audio, log)
	}
}

func (s *Server) takeSlot(ip string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.perIP[ip] >= s.cfg.MaxConnsPerIP {
		return false
	}
	s.perIP[ip]++
	return true
}

func (s *Server) freeSlot(ip string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perIP[ip]--; s.perIP[ip] <= 0 {
		delete(s.perIP, ip)
	}
}

func remoteIP(a net.Addr) string {
	if u, ok := a.(*net.UDPAddr); ok {
		return u.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}
