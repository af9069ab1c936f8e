package main

import (
	"context"
	"time"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/webhooks"
)

// openEvents opens the durable event log (embedded JetStream under the data dir, or the
// external NATS of events.nats_url) before anything can emit. It is released last.
func (d *daemon) openEvents(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	routes, err := d.clusterRoutes()
	if err != nil {
		return err
	}
	l, err := webhooks.OpenLog(ctx, webhooks.LogOptions{
		Config:   d.cfg.Events,
		DataDir:  d.cfg.Node.DataDir,
		Node:     d.node,
		Logger:   d.log.With("component", "events"),
		Routes:   routes,
		Replicas: d.cfg.Cluster.Replicas(),
	})
	if err != nil {
		return err
	}
	d.events = l
	d.onClose(l.Close)
	// Rooms hand their events to the queue and go on; the queue writes them to the log in
	// order per room, outside every lock, and holds them while the log is slow or failing.
	d.queue, err = sfu.NewEventQueue(sfu.QueueOptions{Store: l, Logger: d.log.With("component", "events"),
		Buffer: d.cfg.Events.QueueSize, AckWait: d.cfg.Events.AckWait})
	if err != nil {
		return err
	}
	d.emitter = d.queue
	return nil
}

// flushEvents waits for shutdown, then writes what the queue still holds to the log, giving up
// after events.flush_timeout so that a dead log cannot hold the process (the loss is counted and logged).
func (d *daemon) flushEvents(ctx context.Context) error {
	<-ctx.Done()
	fctx, cancel := context.WithTimeout(context.Background(), d.cfg.Events.FlushTimeout)
	defer cancel()
	if err := d.queue.Close(fctx); err != nil {
		d.log.Error("events: shutdown did not wait for the event log any longer", "err", err)
	}
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
	d.registry.MustRegister(d.queue.Collectors()...)
	d.registry.MustRegister(deliverer.Collectors()...)
	routes := &webhooks.HTTP{Log: d.events, Deliverer: deliverer, WriteTimeout: d.cfg.Events.FollowerTimeout}
	routes.Register(d.api, d.gate)
	d.onShutdown = append(d.onShutdown, routes.CloseFollowers)
	d.add(phaseEvents, "events", d.events.Run)
	d.add(phaseEvents, "webhooks", deliverer.Run)
	d.add(phaseQueue, "event queue", d.flushEvents)
	return nil
}
