package main

import "github.com/sluice-media/sluice/recorder"

// wireRecorder adds the recorder: /v1/recordings, the "recordings" status section and the
// auto-record rules. It runs in the egress phase, so at shutdown the sessions stop first and the
// recorder then closes every file and ends its recordings with reason server_shutdown.
func (d *daemon) wireRecorder() error {
	rec, err := recorder.New(recorder.Options{
		Config:     d.cfg.Recording,
		Dir:        d.cfg.RecordingsDir(),
		Hub:        d.hub,
		Logger:     d.log.With("component", "recorder"),
		Composites: d.comps,
		Storage:    d.cfg.Storage,
	})
	if err != nil {
		return err
	}
	rec.Register(d.api, d.gate)
	d.egressWorkers = append(d.egressWorkers, func() int { return len(rec.Active()) })
	d.add(phaseEgress, "recorder", rec.Run)
	return nil
}
