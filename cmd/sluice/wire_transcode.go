package main

import (
	"context"
	"time"

	"github.com/sluice-media/sluice/egress/composite"
	"github.com/sluice-media/sluice/egress/transcode"
	"github.com/sluice-media/sluice/sfu"
)

// wireTranscode adds the ffmpeg transcoder: the hub converts through it what a reader cannot
// take (AAC for browsers, Opus for RTMP, VP8 for H.264-only readers). Without ffmpeg, or with
// transcode.enabled false, the daemon runs and such subscriptions fail naming the reason. Its
// cost is in /metrics, /v1/status ("transcoders") and the CPU budget of new viewers.
func (d *daemon) wireTranscode() error {
	m, err := transcode.New(transcode.Options{Config: d.cfg.Transcode, Logger: d.log.With("component", "transcode")})
	if err != nil {
		return err
	}
	if err := m.Available(); err != nil {
		d.log.Warn("transcoding unavailable: tracks a reader cannot take will be refused", "reason", err.Error())
	} else {
		d.log.Info("transcoding with ffmpeg", "ffmpeg", d.cfg.Transcode.FFmpeg)
	}
	d.hub.SetTranscoder(m)
	d.childCPU = m.CPU
	d.registry.MustRegister(m)
	d.api.AddStatus("transcoders", func(context.Context) any { return m.Status() })
	d.add(phaseEgress, "transcode", m.Run)
	if d.cfg.Transcode.Enabled {
		d.comps = composite.NewManager(d.hub, composite.Config{FFmpeg: d.cfg.Transcode.FFmpeg, Log: d.log.With("component", "composite")})
		d.comps.Routes(d.api, d.gate)
		d.add(phaseEgress, "composite", func(ctx context.Context) error {
			<-ctx.Done()
			d.comps.Close()
			return nil
		})
	}
	return nil
}

// cpuTime is the daemon's CPU time with its transcoders' ffmpeg processes: what the admission
// of new viewers weighs against limits.cpu_budget. Called from the hub's goroutine.
func (d *daemon) cpuTime() time.Duration {
	t := sfu.ProcessCPU()
	if d.childCPU != nil {
		t += d.childCPU()
	}
	return t
}
