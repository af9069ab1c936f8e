package api

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// A page on any site can send requests to the API from a browser on the daemon's host, and a
// DNS-rebinding name can make such a page same-origin. So API routes refuse a cross-origin
// Origin unless http.allowed_origins lists it, and in open mode (no token stands between a page
// and the API) a Host that is neither loopback nor an allowed origin's host. WHIP and WHEP are
// not API routes: browsers call them cross-origin by design.

var (
	errCrossOrigin = errors.New("cross-origin request")
	errForeignHost = errors.New("host is not loopback in open mode")
)

// ValidateOrigin checks one http.allowed_origins entry: scheme://host[:port], nothing else.
func ValidateOrigin(origin string) error {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
		return fmt.Errorf("%q is not an origin such as https://app.example.com", origin)
	}
	return nil
}

// AllowOrigins sets the web origins whose pages may call the API (http.allowed_origins). Call
// before serving.
func (g *Gate) AllowOrigins(origins ...string) {
	g.origins = map[string]bool{}
	g.hosts = map[string]bool{}
	for _, o := range origins {
		o = strings.ToLower(strings.TrimSuffix(o, "/"))
		g.origins[o] = true
		if u, err := url.Parse(o); err == nil {
			g.hosts[u.Hostname()] = true
		}
	}
}

// checkBrowser refuses what a foreign page could send: a cross-origin Origin that is not
// allowed, and in open mode a Host that is not loopback or an allowed origin's host.
func (g *Gate) checkBrowser(r *http.Request) error {
	if origin := r.Header.Get("Origin"); origin != "" && !g.originAllowed(origin, r.Host) {
		return errCrossOrigin
	}
	if g.OpenMode() && !g.hostAllowed(r.Host) {
		return errForeignHost
	}
	return nil
}

// originAllowed reports whether origin is the request's own (same host and port) or listed.
func (g *Gate) originAllowed(origin, host string) bool {
	origin = strings.ToLower(origin)
	if g.origins[origin] {
		return true
	}
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, host)
}

func (g *Gate) hostAllowed(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") || g.hosts[host] {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// setCORS lets an allowed origin's page read the response.
func (g *Gate) setCORS(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	w.Header().Add("Vary", "Origin")
	if origin != "" && g.origins[strings.ToLower(origin)] {
		w.Header().Set("Access-Control-Allow-Origin", origin)
	}
}

// preflight answers a CORS preflight for an API route: the allowed methods and headers for an
// allowed origin, 403 for any other.
func (g *Gate) preflight(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	w.Header().Add("Vary", "Origin")
	if origin == "" || !g.origins[strings.ToLower(origin)] {
		WriteError(w, Errorf(http.StatusForbidden, CodeForbidden, "cross-origin requests to the API are allowed only from http.allowed_origins"))
		return
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Methods", "GET, POST, PATCH, DELETE")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
	h.Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
}
