package main

import (
	"github.com/sluice-media/sluice/egress/broadcast"
	"github.com/sluice-media/sluice/egress/rtmp"
)

// wireBroadcast adds the RTMP/RTMPS broadcaster: POST /v1/broadcasts pushes a room's stream to
// platforms, converting Opus and VP8/VP9 through the hub's transcoder. It runs in the egress
// phase, so that at shutdown broadcasts end (broadcast.ended, server_shutdown) after the
// sessions stopped and before the rooms close.
func (d *daemon) wireBroadcast() error {
	m, err := broadcast.New(broadcast.Options{
		Config:     d.cfg.Broadcast,
		Hub:        d.hub,
		Logger:     d.log.With("component", "broadcast"),
		RTMP:       rtmp.Options{Dial: d.outbound.DialContext},
		Composites: d.comps,
	})
	if err != nil {
		return err
	}
	m.Routes(d.api, d.gate)
	d.egressWorkers = append(d.egressWorkers, func() int {
		n := 0
		for _, b := range m.List() {
			if b.EndedAt == nil {
				n++
			}
		}
		return n
	})
	d.registry.MustRegister(m)
	d.add(phaseEgress, "broadcast", m.Run)
	return nil
}
