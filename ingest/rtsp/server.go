package rtsp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
)

// Ingests is what the server needs of the ingest store (*ingest.Store): the states of camera
// pulls, and the stream keys of push ingests.
type Ingests interface {
	SetState(id, state string, retries int, reason string, cause error)
	SetUnsupported(id string, codecs []string)
	ByStreamKey(key string) (ingest.Ingest, bool)
	List() []ingest.Ingest
}

// Options build a Server.
type Options struct {
	Config  Config
	Hub     *sfu.Hub
	Gate    *api.Gate
	Ingests Ingests
	Logger  *slog.Logger
	// Backoff is the camera retry schedule; the zero value is DefaultBackoff.
	Backoff Backoff
	// Rand returns numbers in [0, 1) for the backoff jitter; nil uses math/rand.
	Rand func() float64
	// Dial opens camera connections; nil uses a net.Dialer.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// Clock returns the current time; nil uses time.Now.
	Clock func() time.Time
}

// Server is the RTSP side of the daemon: the camera pulls (one supervisor per rtsp_pull
// ingest), and the RTSP server on rtsp.listen for push (ANNOUNCE/RECORD) and play
// (DESCRIBE/SETUP/PLAY). Each session becomes a participant.
//
// NewServer validates and starts nothing; Listen binds the sockets; Run serves until its
// context ends, then stops the pulls, closes every session and waits for everything it
// started. Close releases the sockets when Run never ran. Handlers and methods are safe for
// concurrent use.
type Server struct {
	cfg     Config
	opts    Options
	log     *slog.Logger
	clock   func() time.Time
	backoff Backoff
	pulls   *pullManager
	keys    ingest.Keys

	rtsp *gortsplib.Server
	tcp  net.Listener
	rtp  net.PacketConn
	rtcp net.PacketConn

	mu       sync.Mutex
	conns    map[*gortsplib.ServerConn]*connState
	sessions map[*gortsplib.ServerSession]session
	running  bool
	wg       sync.WaitGroup // session watchers and players' followers
}

// session is a push or play session as the server tracks it.
type session interface {
	// end releases what the session holds; called once, from OnSessionClose.
	end(err error)
	// ingestID is the ingest whose stream key admitted the session ("" if none).
	ingestID() string
	// stop closes the session with reason and waits until it has ended.
	stop(reason string)
}

// connState is what the server remembers of an RTSP connection for auth.failed.
type connState struct {
	remote     string
	challenged bool // got a 401 asking for credentials
	refused    bool // gave wrong credentials (already reported)
	admitted   bool
}

// NewServer validates opts and returns a server; it starts nothing.
func NewServer(opts Options) (*Server, error) {
	if err := opts.Config.Validate(); err != nil {
		return nil, fmt.Errorf("rtsp: %w", err)
	}
	if opts.Hub == nil || opts.Gate == nil || opts.Ingests == nil {
		return nil, errors.New("rtsp: hub, gate and ingests are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Dial == nil {
		opts.Dial = (&net.Dialer{}).DialContext
	}
	if opts.Backoff == (Backoff{}) {
		opts.Backoff = DefaultBackoff()
	}
	s := &Server{
		cfg:      opts.Config,
		opts:     opts,
		log:      opts.Logger,
		clock:    opts.Clock,
		backoff:  opts.Backoff,
		keys:     ingest.Keys{Gate: opts.Gate, Ingests: opts.Ingests, Types: []string{ingest.TypeRTSPPush, ingest.TypeRTMP}},
		conns:    map[*gortsplib.ServerConn]*connState{},
		sessions: map[*gortsplib.ServerSession]session{},
	}
	s.pulls = newPullManager(s)
	return s, nil
}

// PullHandler returns the ingest.Handler of rtsp_pull ingests (camera pulls).
func (s *Server) PullHandler() ingest.Handler { return s.pulls }

// PushHandler returns the ingest.Handler of rtsp_push ingests: deleting one ends its live
// session.
func (s *Server) PushHandler() ingest.Handler { return pushHandler{s} }

// Listen binds the RTSP TCP port and, when UDP is enabled, the RTP/RTCP pair, so that a busy
// port fails the daemon at start.
func (s *Server) Listen() error {
	var err error
	s.tcp, err = net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("rtsp listen %s: %w", s.cfg.Listen, err)
	}
	if s.cfg.UDP() {
		if s.rtp, err = net.ListenPacket("udp", s.cfg.UDPRTPListen); err != nil {
			_ = s.Close()
			return fmt.Errorf("rtsp udp_rtp_listen %s: %w", s.cfg.UDPRTPListen, err)
		}
		if s.rtcp, err = net.ListenPacket("udp", s.cfg.UDPRTCPListen); err != nil {
			_ = s.Close()
			return fmt.Errorf("rtsp udp_rtcp_listen %s: %w", s.cfg.UDPRTCPListen, err)
		}
	}
	return nil
}

// Addr returns the RTSP TCP address (nil before Listen).
func (s *Server) Addr() net.Addr {
	if s.tcp == nil {
		return nil
	}
	return s.tcp.Addr()
}

// Close releases the sockets bound by Listen. Idempotent; Run releases them itself.
func (s *Server) Close() error {
	for _, c := range []interface{ Close() error }{s.tcp, s.rtp, s.rtcp} {
		if c != nil {
			_ = c.Close()
		}
	}
	return nil
}

// Run serves RTSP and pulls the cameras until ctx ends, then stops the pulls, closes every
// session (their participants leave with server_shutdown) and waits for all of it.
func (s *Server) Run(ctx context.Context) error {
	if s.tcp == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	s.rtsp = &gortsplib.Server{
		Handler:     &handler{s},
		RTSPAddress: s.tcp.Addr().String(),
		ReadTimeout: s.cfg.ReadTimeout,
		// Viewers on slow links: a deeper queue before gortsplib drops.
		WriteQueueSize: 1024,
		Listen: func(string, string) (net.Listener, error) {
			return batchListener{s.tcp}, nil
		},
		ListenPacket: func(_, address string) (net.PacketConn, error) {
			if s.rtp != nil && address == s.rtp.LocalAddr().String() {
				return s.rtp, nil
			}
			if s.rtcp != nil && address == s.rtcp.LocalAddr().String() {
				return s.rtcp, nil
			}
			return nil, fmt.Errorf("rtsp: unexpected UDP listen on %s", address)
		},
	}
	if s.rtp != nil {
		s.rtsp.UDPRTPAddress = s.rtp.LocalAddr().String()
		s.rtsp.UDPRTCPAddress = s.rtcp.LocalAddr().String()
	}
	s.mu.Lock()
	s.running = true
	s.mu.Unlock()
	if err := s.rtsp.Start(); err != nil {
		s.mu.Lock()
		s.running = false
		s.mu.Unlock()
		_ = s.Close()
		return fmt.Errorf("rtsp: %w", err)
	}
	s.log.Info("rtsp server listening", "tcp", s.tcp.Addr().String(), "udp", s.rtsp.UDPRTPAddress)

	pullsDone := make(chan struct{})
	go func() {
		defer close(pullsDone)
		s.pulls.run(ctx)
	}()
	<-ctx.Done()
	<-pullsDone
	s.mu.Lock()
	s.running = false
	s.mu.Unlock()
	s.rtsp.Close() // every session ends: OnSessionClose releases its participant
	s.wg.Wait()
	return nil
}

// track registers a session; false when the server is shutting down.
func (s *Server) track(ss *gortsplib.ServerSession, sess session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running {
		return false
	}
	s.sessions[ss] = sess
	return true
}

func (s *Server) sessionOf(ss *gortsplib.ServerSession) session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[ss]
}

func (s *Server) untrack(ss *gortsplib.ServerSession) session {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.sessions[ss]
	delete(s.sessions, ss)
	return sess
}

// pushHandler is the ingest.Handler of rtsp_push ingests.
type pushHandler struct{ s *Server }

// Start implements ingest.Handler; push sessions are admitted by their key when they come.
func (pushHandler) Start(ingest.Ingest) {}

// Stop implements ingest.Handler: the sessions admitted with the ingest's key end.
func (h pushHandler) Stop(id string) {
	h.s.mu.Lock()
	var live []session
	for _, sess := range h.s.sessions {
		if sess.ingestID() == id {
			live = append(live, sess)
		}
	}
	h.s.mu.Unlock()
	for _, sess := range live {
		sess.stop(sfu.ReasonRemoved)
	}
}
