package main

import (
	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/ingest/srt"
)

// wireSRT adds the SRT server (publishers on srt.listen, UDP) and registers it as the handler
// of srt ingests, so that deleting an ingest ends its live session. An empty listen disables it.
func (d *daemon) wireSRT() error {
	if d.cfg.SRT.Listen == "" {
		return nil
	}
	srv, err := srt.NewServer(srt.Options{
		Config:  d.cfg.SRT,
		Hub:     d.hub,
		Gate:    d.gate,
		Ingests: d.ingests,
		Logger:  d.log.With("component", "srt"),
	})
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	d.onClose(srv.Close)
	d.ingests.Register(ingest.TypeSRT, srv)
	d.add(phaseSessions, "srt", srv.Run)
	return nil
}
