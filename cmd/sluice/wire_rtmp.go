package main

import (
	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/ingest/rtmp"
)

// wireRTMP adds the RTMP/RTMPS ingest server (OBS, encoders) and registers it as the handler
// of rtmp ingests, so that deleting an ingest ends its live session.
func (d *daemon) wireRTMP() error {
	srv, err := rtmp.NewServer(rtmp.Options{
		Config:  d.cfg.RTMP,
		Hub:     d.hub,
		Gate:    d.gate,
		Ingests: d.ingests,
		Logger:  d.log.With("component", "rtmp"),
	})
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	d.onClose(srv.Close)
	d.ingests.Register(ingest.TypeRTMP, srv)
	d.add(phaseSessions, "rtmp", srv.Run)
	return nil
}
