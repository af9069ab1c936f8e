package main

import (
	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/ingest/rtsp"
)

// wireRTSP adds the RTSP server (push in, play out on rtsp.listen) and the camera pulls, and
// registers them as the handlers of rtsp_pull and rtsp_push ingests.
func (d *daemon) wireRTSP() error {
	srv, err := rtsp.NewServer(rtsp.Options{
		Config:  d.cfg.RTSP,
		Hub:     d.hub,
		Gate:    d.gate,
		Ingests: d.ingests,
		Logger:  d.log.With("component", "rtsp"),
		Dial:    d.outbound.DialContext,
	})
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	d.onClose(srv.Close)
	d.ingests.Register(ingest.TypeRTSPPull, srv.PullHandler())
	d.ingests.Register(ingest.TypeRTSPPush, srv.PushHandler())
	d.add(phaseSessions, "rtsp", srv.Run)
	return nil
}
