package main

import "github.com/sluice-media/sluice/egress/hls"

// wireHLS adds LL-HLS on the HTTP port (/hls/<room>[/<identity>]/index.m3u8). Its muxers stop
// when the HTTP server begins its shutdown, so that playlist requests waiting for media return.
func (d *daemon) wireHLS() error {
	if !d.cfg.HLS.Enabled {
		return nil
	}
	srv := hls.NewServer(hls.Options{Config: d.cfg.HLS, Hub: d.hub, Gate: d.gate, Logger: d.log.With("component", "hls")})
	srv.Register(d.api)
	d.onShutdown = append(d.onShutdown, srv.Shutdown)
	d.add(phaseSessions, "hls", srv.Run)
	return nil
}
