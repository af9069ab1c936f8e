package rtmp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	gortmp "github.com/yutopp/go-rtmp"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/rtmpproto"
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
	// Gate decides who may publish (open mode, tokens) and reports refusals.
	Gate *api.Gate
	// Ingests holds the stream keys of RTMP ingests; nil when there are none.
	Ingests Ingests
	Logger  *slog.Logger
}

// Server accepts RTMP (and RTMPS) publishers and turns each publish session into a
// participant of its room.
//
// NewServer validates and binds nothing; Listen binds the sockets; Run serves until its
// context ends, then ends every session (server_shutdown) and waits for every connection.
// Close releases the sockets if Run never ran. Server implements ingest.Handler for the rtmp
// ingest type: Stop ends the live session on an ingest's key. Methods are safe for
// concurrent use.
type Server struct {
	cfg     Config
	hub     *sfu.Hub
	gate    *api.Gate
	ingests Ingests
	log     *slog.Logger
	clock   func() time.Time
	lim     rtmpproto.Limits
	keys    ingest.Keys
	pubs    *ingest.Publishers

	listeners []*listener

	mu     sync.Mutex
	closed bool
	conns  map[*conn]struct{}
	perIP  map[string]int
	wg     sync.WaitGroup // connections and listener loops

	panics atomic.Uint64 // handler panics (bugs), for tests
}

// NewServer validates opts; it binds and starts nothing.
func NewServer(opts Options) (*Server, error) {
	if err := opts.Config.Validate(); err != nil {
		return nil, fmt.Errorf("rtmp: %w", err)
	}
	if opts.Hub == nil || opts.Gate == nil {
		return nil, errors.New("rtmp: a hub and a gate are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{
		cfg:     opts.Config,
		hub:     opts.Hub,
		gate:    opts.Gate,
		ingests: opts.Ingests,
		log:     opts.Logger,
		clock:   opts.Hub.Now,
		lim:     rtmpproto.ServerLimits(opts.Config.MaxMessageSize),
		keys:    ingest.Keys{Gate: opts.Gate, Ingests: opts.Ingests, Types: []string{ingest.TypeRTMP}},
		pubs:    ingest.NewPublishers(opts.Hub, opts.Ingests, sfu.ParticipantRTMP, opts.Logger),
		conns:   map[*conn]struct{}{},
		perIP:   map[string]int{},
	}, nil
}

// Listen binds the RTMP port and, when a certificate is configured, the RTMPS port.
func (s *Server) Listen() error {
	l, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("rtmp listen %s: %w", s.cfg.Listen, err)
	}
	s.listeners = append(s.listeners, &listener{Listener: l, s: s, protocol: sfu.ProtocolRTMP})
	if s.cfg.TLS.CertFile == "" {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(s.cfg.TLS.CertFile, s.cfg.TLS.KeyFile)
	if err != nil {
		_ = s.Close()
		return fmt.Errorf("rtmps tls: %w", err)
	}
	tl, err := net.Listen("tcp", s.cfg.RTMPSListen)
	if err != nil {
		_ = s.Close()
		return fmt.Errorf("rtmps listen %s: %w", s.cfg.RTMPSListen, err)
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	s.listeners = append(s.listeners, &listener{Listener: tls.NewListener(tl, tlsCfg), s: s, protocol: sfu.ProtocolRTMPS})
	return nil
}

// Addr returns the bound RTMP address (nil before Listen).
func (s *Server) Addr() net.Addr { return s.addr(sfu.ProtocolRTMP) }

// TLSAddr returns the bound RTMPS address (nil without a certificate).
func (s *Server) TLSAddr() net.Addr { return s.addr(sfu.ProtocolRTMPS) }

func (s *Server) addr(protocol string) net.Addr {
	for _, l := range s.listeners {
		if l.protocol == protocol {
			return l.Addr()
		}
	}
	return nil
}

// Close releases the listeners; Run does it itself. Idempotent.
func (s *Server) Close() error {
	for _, l := range s.listeners {
		_ = l.Close()
	}
	return nil
}

// Run serves the bound listeners until ctx ends, then ends every session with reason
// server_shutdown and waits for every connection to be released.
func (s *Server) Run(ctx context.Context) error {
	if len(s.listeners) == 0 {
		return errors.New("rtmp: Run before Listen")
	}
	servers := make([]*gortmp.Server, len(s.listeners))
	for i, l := range s.listeners {
		srv := gortmp.NewServer(&gortmp.ServerConfig{OnConnect: s.onConnect})
		servers[i] = srv
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			_ = srv.Serve(l) // returns once srv.Close closed the listener
		}()
		s.log.Info("rtmp ingest listening", "protocol", l.protocol, "addr", l.Addr().String())
	}
	<-ctx.Done()
	s.pubs.Close()
	s.mu.Lock()
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, srv := range servers {
		_ = srv.Close()
	}
	for _, c := range conns {
		c.kill(sfu.ReasonServerShutdown, nil)
	}
	s.wg.Wait()
	return nil
}

// Start implements ingest.Handler: an RTMP ingest needs nothing until a publisher comes.
func (s *Server) Start(ingest.Ingest) {}

// Stop implements ingest.Handler: it ends the live session on the ingest's key (reason
// removed) and waits for it to be released.
func (s *Server) Stop(id string) { s.pubs.Stop(id) }

// Sessions returns the number of live publish sessions.
func (s *Server) Sessions() int { return s.pubs.Len() }

// listener accepts connections for go-rtmp, refusing those over the per-IP limit before
// go-rtmp spends a goroutine on them.
type listener struct {
	net.Listener
	s        *Server
	protocol string
	backoff  time.Duration
}

// Accept implements net.Listener.
func (l *listener) Accept() (net.Conn, error) {
	for {
		raw, err := l.Listener.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				// Out of file descriptors and the like: go-rtmp retries at once, so pace it.
				l.backoff = min(max(2*l.backoff, 5*time.Millisecond), time.Second)
				l.s.log.Warn("rtmp accept", "err", err, "retry_in", l.backoff)
				time.Sleep(l.backoff)
			}
			return nil, err
		}
		l.backoff = 0
		if c := l.s.accept(raw, l.protocol); c != nil {
			return c, nil
		}
	}
}

// accept registers a new connection, or closes it when the server is closing or its address
// has too many connections.
func (s *Server) accept(raw net.Conn, protocol string) *conn {
	ip := remoteIP(raw.RemoteAddr())
	s.mu.Lock()
	if s.closed || s.perIP[ip] >= s.cfg.MaxConnsPerIP {
		closed := s.closed
		s.mu.Unlock()
		_ = raw.Close()
		if !closed {
			s.log.Warn("rtmp connection refused: too many connections from one address", "remote_addr", raw.RemoteAddr().String(), "limit", s.cfg.MaxConnsPerIP)
		}
		return nil
	}
	s.perIP[ip]++
	c := newConn(s, raw, protocol)
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go c.watch()
	return c
}

// released is called once by a connection after it closed and stopped its goroutines.
func (s *Server) released(c *conn) {
	ip := remoteIP(c.RemoteAddr())
	s.mu.Lock()
	delete(s.conns, c)
	if s.perIP[ip]--; s.perIP[ip] <= 0 {
		delete(s.perIP, ip)
	}
	s.mu.Unlock()
	s.wg.Done()
}

// onConnect is go-rtmp's ServerConfig.OnConnect: the connection it gets is ours.
func (s *Server) onConnect(nc net.Conn) (io.ReadWriteCloser, *gortmp.ConnConfig) {
	c := nc.(*conn)
	return c, &gortmp.ConnConfig{
		Handler:                   c,
		SkipHandshakeVerification: true, // clients that answer with a digest C2 are fine too
		ControlState: gortmp.StreamControlStateConfig{
			MaxChunkStreams:   s.lim.MaxChunkStreams,
			MaxMessageSize:    s.lim.MaxMedia,
			MaxMessageStreams: 4,
		},
		Logger: newLibLogger(c.lib),
	}
}

func remoteIP(a net.Addr) string {
	if tcp, ok := a.(*net.TCPAddr); ok {
		return tcp.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}
