package hls

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/auth"
)

// Options build a Server.
type Options struct {
	Config Config
	Hub    *sfu.Hub
	Gate   *api.Gate
	Logger *slog.Logger
}

// Server answers /hls/ requests and owns the muxers. NewServer starts nothing; Run serves until
// its context ends, then stops every muxer and waits for them. Safe for concurrent use.
type Server struct {
	opts   Options
	log    *slog.Logger
	base   context.Context // the muxers' context: ended by Shutdown or the end of Run
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	muxers map[muxerKey]*muxer
	closed bool
}

// muxerKey names a muxer: a room's source, and whether its audio is converted to AAC.
type muxerKey struct {
	room, identity string
	aac            bool
}

// NewServer returns the server of opts; it starts nothing.
func NewServer(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, log: opts.Logger, muxers: map[muxerKey]*muxer{}}
	s.base, s.cancel = context.WithCancel(context.Background())
	return s
}

// Register mounts the /hls/ routes.
func (s *Server) Register(mux interface {
	Handle(pattern string, h http.Handler)
}) {
	mux.Handle("GET /hls/{room}/{file}", cors(http.HandlerFunc(s.serve)))
	mux.Handle("GET /hls/{room}/{identity}/{file}", cors(http.HandlerFunc(s.serve)))
	mux.Handle("OPTIONS /hls/", cors(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})))
}

// cors lets pages of any origin play (the token, not a cookie, is what admits a request).
func cors(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Access-Control-Allow-Origin", "*")
		hd.Set("Access-Control-Allow-Methods", "GET, OPTIONS")
		hd.Set("Access-Control-Allow-Headers", "Authorization")
		h.ServeHTTP(w, r)
	})
}

// Run serves until ctx ends, then stops every muxer and waits for them.
func (s *Server) Run(ctx context.Context) error {
	<-ctx.Done()
	s.Shutdown()
	s.wg.Wait()
	return nil
}

// Shutdown stops every muxer and refuses new ones, so that requests waiting for media return
// (the HTTP server's graceful shutdown). Idempotent; Run still waits for the muxers.
func (s *Server) Shutdown() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
}

// Muxers returns the number of running muxers.
func (s *Server) Muxers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.muxers)
}

var errNoSource = errors.New("no such stream: the room has no publisher to play")

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	k := muxerKey{room: r.PathValue("room"), identity: r.PathValue("identity"), aac: needsAAC(r)}
	names := []string{k.room}
	if k.identity != "" {
		names = append(names, k.identity)
	}
	for _, name := range names {
		if err := sfu.ValidateName(name); err != nil {
			api.WriteError(w, api.Errorf(http.StatusBadRequest, api.CodeBadRequest, "%v", err))
			return
		}
	}
	if _, err := s.opts.Gate.Check(api.RequestToken(r), auth.ActionSubscribe, k.room, sfu.ProtocolHLS, r.RemoteAddr); err != nil {
		api.WriteError(w, api.HTTPError(err))
		return
	}
	m, err := s.muxer(k, r.PathValue("file"))
	if err != nil {
		api.WriteError(w, api.Errorf(http.StatusNotFound, api.CodeNotFound, "%v", err))
		return
	}
	m.handle(w, r)
}

// muxer returns the running muxer of k, starting it for a request of its playlist when its
// source exists.
func (s *Server) muxer(k muxerKey, file string) (*muxer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.muxers[k]; m != nil {
		m.touch()
		return m, nil
	}
	if s.closed {
		return nil, errors.New("shutting down")
	}
	if file != "index.m3u8" {
		return nil, errors.New("no such file: the stream's muxer stopped (load index.m3u8 again)")
	}
	if (sfu.Selector{Identity: k.identity}).Participant(s.opts.Hub.Room(k.room)) == nil {
		return nil, errNoSource
	}
	m := newMuxer(s, k)
	s.muxers[k] = m
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		m.run(s.base)
		s.mu.Lock()
		delete(s.muxers, k)
		s.mu.Unlock()
	}()
	return m, nil
}

// needsAAC reports whether the client asks for AAC audio (?audio=aac) or is Apple's native
// player, which does not take Opus in fMP4 everywhere; hls.js in other browsers plays Opus.
func needsAAC(r *http.Request) bool {
	if r.URL.Query().Get("audio") == "aac" {
		return true
	}
	ua := r.UserAgent()
	if strings.Contains(ua, "AppleCoreMedia") {
		return true
	}
	return strings.Contains(ua, "Safari/") && !strings.Contains(ua, "Chrome/") && !strings.Contains(ua, "Chromium/") &&
		!strings.Contains(ua, "Android")
}
