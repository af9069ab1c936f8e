package main

import (
	"github.com/sluice-media/sluice/sfu/livekit"
	"github.com/sluice-media/sluice/sfu/rtc"
)

// wireWebRTC adds the WebRTC engine (the UDP/TCP port of every session) and WHIP/WHEP.
func (d *daemon) wireWebRTC() error {
	engine, err := rtc.NewEngine(d.cfg.WebRTC, d.log.With("component", "webrtc"))
	if err != nil {
		return err
	}
	d.onClose(engine.Close)
	d.registry.MustRegister(engine)
	d.hub.WatchSend(func() (sent, dropped uint64) {
		sent, _, dropped = engine.SentPackets()
		return sent, dropped
	})
	srv := rtc.NewServer(engine, d.hub, d.gate, d.log.With("component", "webrtc"))
	srv.Register(d.api)
	d.add(phaseSessions, "webrtc", srv.Run)
	// LiveKit client SDKs join rooms over /rtc, on the same engine.
	lk := livekit.NewServer(engine, d.hub, d.gate, d.log.With("component", "livekit"))
	lk.Register(d.api)
	d.add(phaseSessions, "livekit", lk.Run)
	d.log.Info("webrtc media", "udp", engine.LocalAddr().String())
	return nil
}
