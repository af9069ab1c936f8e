package api

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
)

// Gate decides who may do what, for every protocol: in open mode publish and play are allowed
// and the API answers loopback clients only; with keys every request needs a token with the
// right grants. Every refusal emits auth.failed (without the token). Safe for concurrent use.
type Gate struct {
	verifier *auth.Verifier
	emit     sfu.Emitter
	limiter  refusalLimiter
	origins  map[string]bool // http.allowed_origins, lower case
	hosts    map[string]bool // their host names
}

// NewGate returns a gate over verifier that reports refusals to emit.
func NewGate(verifier *auth.Verifier, emit sfu.Emitter) *Gate {
	return &Gate{verifier: verifier, emit: emit, limiter: refusalLimiter{buckets: map[string]*bucket{}, clock: time.Now}}
}

// Verifier returns the token verifier.
func (g *Gate) Verifier() *auth.Verifier { return g.verifier }

// OpenMode reports whether no keys are configured.
func (g *Gate) OpenMode() bool { return g.verifier.OpenMode() }

// Check authorizes a token for action in room over protocol. It returns the claims (nil in open
// mode) or an error wrapping one of auth's errors; refusals are reported as auth.failed.
func (g *Gate) Check(token string, action auth.Action, room, protocol, remoteAddr string) (*auth.Claims, error) {
	if g.verifier.OpenMode() {
		return nil, nil
	}
	claims, err := g.verifier.Verify(token)
	if err == nil && !claims.Allows(action, room) {
		err = auth.ErrPermissionDenied
	}
	if err != nil {
		g.Refused(err, protocol, remoteAddr)
		return nil, err
	}
	return claims, nil
}

// Refused reports a refusal of err (an auth error) from remoteAddr over protocol: always in
// the refusals metric, and as an auth.failed event unless that address has already had its
// share (a burst of 10, then one a second), so that a flood of bad requests cannot flood the
// event log and the webhooks.
func (g *Gate) Refused(err error, protocol, remoteAddr string) {
	g.limiter.refusals.Add(1)
	if !g.limiter.allow(hostOf(remoteAddr)) {
		return
	}
	g.emit.Emit(&sfu.Event{Type: sfu.EventAuthFailed, Reason: auth.Reason(err), RemoteAddr: remoteAddr, Protocol: protocol})
}

// Refusals returns how many requests were refused, and how many of those were not reported
// as events because their address was over its limit.
func (g *Gate) Refusals() (total, unreported uint64) {
	return g.limiter.refusals.Load(), g.limiter.suppressed.Load()
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// refusalLimiter is a token bucket per remote address.
type refusalLimiter struct {
	mu         sync.Mutex
	buckets    map[string]*bucket
	clock      func() time.Time
	refusals   atomic.Uint64
	suppressed atomic.Uint64
}

type bucket struct {
	tokens float64
	at     time.Time
}

const (
	refusalBurst = 10
	refusalRate  = 1.0 // events per second per address, after the burst
)

func (l *refusalLimiter) allow(host string) bool {
	now := l.clock()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[host]
	if b == nil {
		if len(l.buckets) >= 10000 {
			clear(l.buckets) // bounded memory; a wiped bucket starts full again
		}
		b = &bucket{tokens: refusalBurst, at: now}
		l.buckets[host] = b
	}
	b.tokens = min(refusalBurst, b.tokens+now.Sub(b.at).Seconds()*refusalRate)
	b.at = now
	if b.tokens < 1 {
		l.suppressed.Add(1)
		return false
	}
	b.tokens--
	return true
}

// RequestToken returns the token of an HTTP request: the Bearer header, else ?access_token=.
func RequestToken(r *http.Request) string {
	if t := auth.BearerToken(r.Header.Get("Authorization")); t != "" {
		return t
	}
	return r.URL.Query().Get("access_token")
}

// HTTPError turns an error of Check into the API error to send.
func HTTPError(err error) *Error {
	if errors.Is(err, auth.ErrPermissionDenied) {
		return Errorf(http.StatusForbidden, CodeForbidden, "the token does not allow this")
	}
	if errors.Is(err, errCrossOrigin) {
		return Errorf(http.StatusForbidden, CodeForbidden, "cross-origin requests to the API are allowed only from http.allowed_origins")
	}
	if errors.Is(err, errForeignHost) {
		return Errorf(http.StatusForbidden, CodeForbidden, "open mode: the API answers only requests addressed to a loopback host name (or an http.allowed_origins host)")
	}
	if errors.Is(err, errLoopbackOnly) {
		return Errorf(http.StatusForbidden, CodeForbidden, "open mode: the API answers loopback clients only; configure auth.keys to use it remotely")
	}
	return Errorf(http.StatusUnauthorized, CodeUnauthorized, "%s", authMessage(err))
}

func authMessage(err error) string {
	switch {
	case errors.Is(err, auth.ErrMissingToken):
		return "a token is required (Authorization: Bearer <token>)"
	case errors.Is(err, auth.ErrExpiredToken):
		return "the token has expired"
	}
	return "the token is not valid"
}

var errLoopbackOnly = errors.New("api from a non-loopback address in open mode")

type claimsKey struct{}

// Claims returns the claims an Admin- or Room-wrapped handler was admitted with (nil in open
// mode).
func Claims(ctx context.Context) *auth.Claims {
	c, _ := ctx.Value(claimsKey{}).(*auth.Claims)
	return c
}

// Admin wraps an API handler: a cross-origin request passes only from an allowed origin; in
// open mode only loopback clients that name a loopback host pass; with keys the token needs
// the admin grant.
func (g *Gate) Admin(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.setCORS(w, r)
		err := g.checkBrowser(r)
		if g.OpenMode() && !IsLoopback(r.RemoteAddr) {
			err = errLoopbackOnly
		}
		if err != nil {
			g.Refused(auth.ErrPermissionDenied, "http", r.RemoteAddr)
			WriteError(w, HTTPError(err))
			return
		}
		if g.OpenMode() {
			h.ServeHTTP(w, r)
			return
		}
		claims, err := g.Check(RequestToken(r), auth.ActionAdmin, "", "http", r.RemoteAddr)
		if err != nil {
			WriteError(w, HTTPError(err))
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, claims)))
	})
}

// IsLoopback reports whether a host:port address is on the loopback interface.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
