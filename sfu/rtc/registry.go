package rtc

import (
	"context"
	"net/http"
	"sync"

	"github.com/sluice-media/sluice/sfu"
)

// Registry holds the running sessions of a signalling server (WHIP/WHEP here, LiveKit's /rtc
// in sfu/livekit) by key, owns their goroutines, and ends them all when its Run returns.
// NewRegistry starts nothing; every method is safe for concurrent use.
type Registry[S any] struct {
	stop func(s S, reason string, err error)

	mu       sync.Mutex
	ctx      context.Context // session contexts derive from it; set by Run
	sessions map[string]S
	closed   bool
	wg       sync.WaitGroup
	ready    chan struct{}
}

// NewRegistry returns an empty registry; stop ends one session without waiting (Run calls it
// for each session at shutdown).
func NewRegistry[S any](stop func(s S, reason string, err error)) *Registry[S] {
	return &Registry[S]{stop: stop, sessions: map[string]S{}, ready: make(chan struct{})}
}

// Run lets sessions start until ctx ends, then stops them all (reason server_shutdown) and
// waits for their goroutines.
func (r *Registry[S]) Run(ctx context.Context) error {
	r.mu.Lock()
	r.ctx = ctx
	r.mu.Unlock()
	close(r.ready)
	<-ctx.Done()
	r.mu.Lock()
	r.closed = true
	all := make([]S, 0, len(r.sessions))
	for _, s := range r.sessions {
		all = append(all, s)
	}
	r.mu.Unlock()
	for _, s := range all {
		r.stop(s, sfu.ReasonServerShutdown, nil)
	}
	r.wg.Wait()
	return nil
}

// Context returns the context sessions derive from, waiting for Run to start; it reports false
// when the request ends first.
func (r *Registry[S]) Context(req *http.Request) (context.Context, bool) {
	select {
	case <-r.ready:
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.ctx, true
	case <-req.Context().Done():
		return nil, false
	}
}

// Go registers s under key and runs run on a goroutine the registry owns; s leaves the
// registry when run returns. It reports false, running nothing, once Run is shutting down.
func (r *Registry[S]) Go(key string, s S, run func()) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.sessions[key] = s
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		run()
		r.mu.Lock()
		delete(r.sessions, key)
		r.mu.Unlock()
	}()
	return true
}

// Get returns the session under key.
func (r *Registry[S]) Get(key string) (S, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.sessions[key]
	return s, ok
}

// All returns the live sessions, in no order.
func (r *Registry[S]) All() []S {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]S, 0, len(r.sessions))
	for _, s := range r.sessions {
		out = append(out, s)
	}
	return out
}

// Len returns the number of live sessions.
func (r *Registry[S]) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sessions)
}
