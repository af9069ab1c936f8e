package main

import (
	"net"
	"path/filepath"
	"strconv"

	"github.com/sluice-media/sluice/ingest"
)

// wireIngests opens the ingest definitions (stream keys, camera pulls) and their API. The RTMP
// and RTSP servers register their handlers on d.ingests when they are wired.
func (d *daemon) wireIngests() error {
	store, err := ingest.Open(filepath.Join(d.cfg.Node.DataDir, "ingests"), d.cfg.Ingests, d.emitter, d.log.With("component", "ingest"))
	if err != nil {
		return err
	}
	d.ingests = store
	store.Routes(d.api, d.gate, ingest.Endpoints{RTMPPort: port(d.cfg.RTMP.Listen), RTSPPort: port(d.cfg.RTSP.Listen), SRTPort: port(d.cfg.SRT.Listen)}, d.hub.Now)
	return nil
}

// port returns the port number of a listen address (0 when it has none).
func port(listen string) int {
	_, p, err := net.SplitHostPort(listen)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}
