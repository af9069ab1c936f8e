package main

import (
	"context"
	"time"

	"github.com/sluice-media/sluice/webhooks"
)

// openEvents opens the durable event log (embedded JetStream under the data dir, or the
// external NATS of events.nats_url) before anything can emit. It is released last.
func (d *daemon) openEvents() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := webhooks.OpenLog(ctx, webhooks.LogOptions{
		Config:  d.cfg.Events,
		DataDir: d.cfg.Node.DataDir,
		Node:    d.node,
		Logger:  d.log.With("component", "events"),
	})
	if err != nil {
		return err
	}
	d.events = l
	d.onClose(l.Close)
	d.emitter = newLoggingEmitter(l, d.log)
	return nil
}

// wireEvents adds the log's snapshot keeper, webhook delivery, and the events and webhooks
// routes. Both components run in the first phase, so they stop after every emitter.
func (d *daemon) wireEvents() error {
	deliverer, err := webhooks.NewDeliverer(webhooks.DeliveryOptions{
		Config:    d.cfg.Webhooks,
		Log:       d.events,
		Logger:    d.log.With("component", "webhooks"),
		UserAgent: "sluice/" + version,
	})
	if err != nil {
		return err
	}
	d.registry.MustRegister(d.events.Collectors()...)
	d.registry.MustRegister(deliverer.Collectors()...)
	routes := &webhooks.HTTP{Log: d.events, Deliverer: deliverer}
	routes.Register(d.api, d.gate)
	d.onShutdown = append(d.onShutdown, routes.CloseFollowers)
	d.add(phaseEvents, "events", d.events.Run)
	d.add(phaseEvents, "webhooks", deliverer.Run)
	return nil
}
