// Package web serves the built-in pages on the HTTP port: / lists the rooms and their
// participants live, /r/<room> plays a room (WHEP, with LL-HLS as the fallback) with a stats
// overlay, /r/<room>/publish sends a camera and microphone over WHIP. They are plain HTML and
// JavaScript embedded in the binary: no build step, nothing loaded from a CDN. hls.js is a
// pinned copy of the npm package's dist/hls.min.js (Apache-2.0, its license beside it), checked
// against the version the lock file in testdata/js pins.
//
// The pages take their parameters from the URL fragment, which browsers never send to a
// server: token (key mode), server (the daemon's URL when the pages are served from another
// origin), identity, mode (whep or hls) and, on the publish page, start.
package web

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// files is the static directory.
var files, _ = fs.Sub(static, "static")

// securityHeaders keep the pages to their own scripts; media and API calls may go to any
// server (the daemon may be on another origin).
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
			"connect-src *; media-src * blob:; worker-src 'self' blob:; frame-ancestors 'self'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

// page serves one HTML file of the static directory.
func page(name string) http.Handler {
	return securityHeaders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, files, name)
	}))
}

// Register mounts the pages: /, /r/{room}, /r/{room}/publish and their /static/ files.
func Register(mux interface {
	Handle(pattern string, h http.Handler)
}) {
	mux.Handle("GET /{$}", page("index.html"))
	mux.Handle("GET /r/{room}", page("player.html"))
	mux.Handle("GET /r/{room}/publish", page("publish.html"))
	mux.Handle("GET /static/", securityHeaders(http.StripPrefix("/static/", http.FileServerFS(files))))
}

// Handler returns the pages alone, as Register mounts them (to serve them from another origin).
func Handler() http.Handler {
	mux := http.NewServeMux()
	Register(mux)
	return mux
}
