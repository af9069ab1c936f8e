package api

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
)

// Options build a Server.
type Options struct {
	Hub      *sfu.Hub
	Gate     *Gate
	Registry *prometheus.Registry
	Logger   *slog.Logger
	Version  string
	Node     string
	// MetricsAllow are the addresses (a scraper) that read /metrics without the admin gate.
	MetricsAllow []netip.Prefix
}

// Server is the HTTP API of the daemon. Routes are registered before it serves; Handler returns
// the finished handler. Safe for concurrent use once serving.
type Server struct {
	opts    Options
	mux     *http.ServeMux
	ready   atomic.Bool
	started time.Time

	mu     sync.Mutex
	status []statusSource
}

type statusSource struct {
	name string
	fn   func(ctx context.Context) any
}

// New builds the server with the core routes.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, mux: http.NewServeMux(), started: opts.Hub.Now()}
	g := opts.Gate
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() {
			WriteError(w, Errorf(http.StatusServiceUnavailable, CodeUnavailable, "starting or stopping"))
			return
		}
		WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	if opts.Registry != nil {
		s.mux.Handle("GET /metrics", s.metrics(promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{})))
		opts.Registry.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sluice_auth_refusals_total", Help: "Requests refused by auth (API, WHIP, WHEP, RTMP, RTSP)."},
				func() float64 { n, _ := g.Refusals(); return float64(n) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sluice_auth_refusals_unreported_total", Help: "Refusals not reported as auth.failed because their address was over its rate."},
				func() float64 { _, n := g.Refusals(); return float64(n) }),
		)
	}
	// Profiles for operators (and `go tool pprof`), behind the admin gate.
	s.mux.Handle("GET /debug/pprof/", g.Admin(http.HandlerFunc(pprof.Index)))
	s.mux.Handle("GET /debug/pprof/profile", g.Admin(http.HandlerFunc(pprof.Profile)))
	s.mux.Handle("GET /debug/pprof/trace", g.Admin(http.HandlerFunc(pprof.Trace)))
	s.mux.Handle("GET /v1/status", g.Admin(http.HandlerFunc(s.getStatus)))
	s.mux.Handle("GET /v1/rooms", g.Admin(http.HandlerFunc(s.listRooms)))
	s.mux.Handle("POST /v1/rooms", g.Admin(http.HandlerFunc(s.createRoom)))
	s.mux.Handle("GET /v1/rooms/{room}", g.Admin(http.HandlerFunc(s.getRoom)))
	s.mux.Handle("DELETE /v1/rooms/{room}", g.Admin(http.HandlerFunc(s.deleteRoom)))
	s.mux.Handle("PATCH /v1/rooms/{room}", g.Admin(http.HandlerFunc(s.updateRoom)))
	s.mux.Handle("DELETE /v1/rooms/{room}/participants/{identity}", g.Admin(http.HandlerFunc(s.kick)))
	s.mux.Handle("PATCH /v1/rooms/{room}/participants/{identity}", g.Admin(http.HandlerFunc(s.updateParticipant)))
	s.mux.Handle("POST /v1/rooms/{room}/participants/{identity}/tracks/{sid}/mute", g.Admin(http.HandlerFunc(s.muteTrack)))
	s.mux.Handle("POST /v1/rooms/{room}/data", g.Admin(http.HandlerFunc(s.sendData)))
	s.mux.Handle("POST /v1/tokens", g.Admin(http.HandlerFunc(s.createToken)))
	s.mux.HandleFunc("OPTIONS /v1/", g.preflight)
	s.mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, Errorf(http.StatusNotFound, CodeNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return s
}

// metrics serves h to the http.metrics_allow addresses, and through the admin gate to others.
func (s *Server) metrics(h http.Handler) http.Handler {
	admin := s.opts.Gate.Admin(h)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil && r.Header.Get("Origin") == "" {
			for _, p := range s.opts.MetricsAllow {
				if p.Contains(ap.Addr().Unmap()) {
					h.ServeHTTP(w, r)
					return
				}
			}
		}
		admin.ServeHTTP(w, r)
	})
}

// Handle registers a route (Go 1.22 pattern) for an edge package; wrap it with Gate.Admin for
// API routes. Call before serving.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// AddStatus adds a section to /v1/status, computed by fn at each request. Call before serving.
func (s *Server) AddStatus(name string, fn func(ctx context.Context) any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = append(s.status, statusSource{name, fn})
}

// SetReady flips /readyz.
func (s *Server) SetReady(ready bool) { s.ready.Store(ready) }

// Handler returns the HTTP handler of the API.
func (s *Server) Handler() http.Handler { return s.mux }

// Status is the core of the body of GET /v1/status; sections added with AddStatus sit beside
// these fields under their names.
type Status struct {
	Node      string           `json:"node"`
	Version   string           `json:"version"`
	StartedAt time.Time        `json:"started_at"`
	OpenMode  bool             `json:"open_mode"`
	Rooms     []sfu.RoomStatus `json:"rooms"`
}

func (s *Server) getStatus(w http.ResponseWriter, r *http.Request) {
	body := map[string]any{
		"node":       s.opts.Node,
		"version":    s.opts.Version,
		"started_at": s.started.UTC(),
		"open_mode":  s.opts.Gate.OpenMode(),
	}
	rooms := []sfu.RoomStatus{}
	for _, room := range s.opts.Hub.Rooms() {
		rooms = append(rooms, room.Status())
	}
	body["rooms"] = rooms
	s.mu.Lock()
	sources := append([]statusSource(nil), s.status...)
	s.mu.Unlock()
	for _, src := range sources {
		body[src.name] = src.fn(r.Context())
	}
	WriteJSON(w, http.StatusOK, body)
}

func (s *Server) listRooms(w http.ResponseWriter, _ *http.Request) {
	rooms := []*sfu.RoomInfo{}
	for _, r := range s.opts.Hub.Rooms() {
		rooms = append(rooms, r.Info())
	}
	WriteJSON(w, http.StatusOK, map[string]any{"rooms": rooms})
}

// CreateRoomRequest is the body of POST /v1/rooms.
type CreateRoomRequest struct {
	Name         string `json:"name"`
	EmptyTimeout string `json:"empty_timeout,omitempty"`
	Metadata     string `json:"metadata,omitempty"`
}

func (s *Server) createRoom(w http.ResponseWriter, r *http.Request) {
	var req CreateRoomRequest
	if err := DecodeJSON(w, r, &req); err != nil {
		WriteError(w, err)
		return
	}
	if err := sfu.ValidateName(req.Name); err != nil {
		WriteError(w, Errorf(http.StatusBadRequest, CodeBadRequest, "name: %v", err))
		return
	}
	var timeout time.Duration
	if req.EmptyTimeout != "" {
		d, err := time.ParseDuration(req.EmptyTimeout)
		if err != nil || d <= 0 {
			WriteError(w, Errorf(http.StatusBadRequest, CodeBadRequest, "empty_timeout: %q is not a positive duration", req.EmptyTimeout))
			return
		}
		timeout = d
	}
	room, created, err := s.opts.Hub.CreateRoom(req.Name, sfu.RoomOptions{EmptyTimeout: timeout, Metadata: req.Metadata})
	if err != nil {
		WriteError(w, Errorf(http.StatusServiceUnavailable, CodeUnavailable, "%v", err))
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	WriteJSON(w, status, room.Info())
}

func (s *Server) room(w http.ResponseWriter, r *http.Request) *sfu.Room {
	room := s.opts.Hub.Room(r.PathValue("room"))
	if room == nil {
		WriteError(w, Errorf(http.StatusNotFound, CodeNotFound, "room %q not found", r.PathValue("room")))
	}
	return room
}

func (s *Server) getRoom(w http.ResponseWriter, r *http.Request) {
	if room := s.room(w, r); room != nil {
		WriteJSON(w, http.StatusOK, room.Status())
	}
}

func (s *Server) deleteRoom(w http.ResponseWriter, r *http.Request) {
	if err := s.opts.Hub.DeleteRoom(r.PathValue("room")); err != nil {
		WriteError(w, Errorf(http.StatusNotFound, CodeNotFound, "room %q not found", r.PathValue("room")))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) kick(w http.ResponseWriter, r *http.Request) {
	room := s.room(w, r)
	if room == nil {
		return
	}
	if err := room.Kick(r.PathValue("identity")); err != nil {
		WriteError(w, Errorf(http.StatusNotFound, CodeNotFound, "participant %q not in room %q", r.PathValue("identity"), room.Name()))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// TokenRequest is the body of POST /v1/tokens.
type TokenRequest struct {
	Room      string `json:"room"`
	Identity  string `json:"identity"`
	Name      string `json:"name,omitempty"`
	Publish   bool   `json:"publish"`
	Subscribe bool   `json:"subscribe"`
	Admin     bool   `json:"admin"`
	TTL       string `json:"ttl,omitempty"`
	// LiveKit adds the `video` grant of LiveKit access tokens (for LiveKit client SDKs): join
	// the room, publish (with data) and subscribe as Publish and Subscribe say.
	LiveKit  bool   `json:"livekit,omitempty"`
	Metadata string `json:"metadata,omitempty"`
}

// TokenResponse is the answer of POST /v1/tokens.
type TokenResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// MaxTokenTTL bounds the lifetime of a minted token.
const MaxTokenTTL = 366 * 24 * time.Hour

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	var req TokenRequest
	if err := DecodeJSON(w, r, &req); err != nil {
		WriteError(w, err)
		return
	}
	claims, err := BuildClaims(req, s.opts.Hub.Now())
	if err != nil {
		WriteError(w, err)
		return
	}
	v := s.opts.Gate.Verifier()
	key, secret, ok := "", "", false
	if c := Claims(r.Context()); c != nil {
		key = c.Issuer
		secret, ok = v.Secret(key)
	}
	if !ok {
		key, secret, ok = v.AnyKey()
	}
	if !ok {
		WriteError(w, Errorf(http.StatusConflict, CodeConflict, "open mode: no auth keys are configured, so tokens are neither needed nor verifiable"))
		return
	}
	tok, err := auth.Sign(key, secret, claims)
	if err != nil {
		WriteError(w, err)
		return
	}
	WriteJSON(w, http.StatusCreated, TokenResponse{Token: tok, ExpiresAt: time.Unix(claims.ExpiresAt, 0).UTC()})
}

// BuildClaims validates a token request and returns its claims, issued at now.
func BuildClaims(req TokenRequest, now time.Time) (auth.Claims, error) {
	ttl := time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > MaxTokenTTL {
			return auth.Claims{}, Errorf(http.StatusBadRequest, CodeBadRequest, "ttl: %q is not a duration between 1s and %s", req.TTL, MaxTokenTTL)
		}
		ttl = d
	}
	if req.Room == "" && !req.Admin {
		return auth.Claims{}, Errorf(http.StatusBadRequest, CodeBadRequest, "room: required unless the token is admin")
	}
	if req.Room != "" {
		if err := sfu.ValidateName(req.Room); err != nil {
			return auth.Claims{}, Errorf(http.StatusBadRequest, CodeBadRequest, "room: %v", err)
		}
	}
	if req.Identity != "" {
		if err := sfu.ValidateName(req.Identity); err != nil {
			return auth.Claims{}, Errorf(http.StatusBadRequest, CodeBadRequest, "identity: %v", err)
		}
	}
	if !req.Publish && !req.Subscribe && !req.Admin {
		return auth.Claims{}, Errorf(http.StatusBadRequest, CodeBadRequest, "grants: at least one of publish, subscribe, admin")
	}
	c := auth.Claims{
		Identity:  req.Identity,
		Name:      req.Name,
		IssuedAt:  now.Unix(),
		NotBefore: now.Unix(),
		ExpiresAt: now.Add(ttl).Unix(),
		Grants:    auth.Grants{Room: req.Room, Publish: req.Publish, Subscribe: req.Subscribe, Admin: req.Admin},
		Metadata:  req.Metadata,
	}
	if req.LiveKit {
		if req.Identity == "" || req.Room == "" {
			return auth.Claims{}, Errorf(http.StatusBadRequest, CodeBadRequest, "livekit: a LiveKit token needs room and identity")
		}
		pub, sub := req.Publish, req.Subscribe
		c.Video = &auth.VideoGrant{RoomJoin: true, Room: req.Room, CanPublish: &pub, CanSubscribe: &sub, CanPublishData: &pub, RoomAdmin: req.Admin}
	}
	return c, nil
}
