package main

import (
	"context"
	"net/http"
	"time"

	"github.com/sluice-media/sluice/cluster"
	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/webhooks"
)

// clusterRoutes returns the embedded NATS server's cluster routes (nil on a single node, or
// when the nodes share an external NATS).
func (d *daemon) clusterRoutes() (*webhooks.Routes, error) {
	c := d.cfg.Cluster
	if !c.Enabled() || len(c.Peers) == 0 {
		return nil, nil
	}
	host, port, peers, password, err := c.Routes()
	if err != nil {
		return nil, err
	}
	return &webhooks.Routes{Name: c.Name, Host: host, Port: port, Peers: peers, User: c.User, Password: password}, nil
}

// wireCluster adds the node registry (heartbeats with load, node.joined and node.left), the
// "nodes" status section and GET /v1/nodes, and the placement of rooms with the router that
// redirects WHIP/WHEP to a room's node and makes /v1/rooms cluster-wide. Nothing is added on a single node. The registry
// runs in the core phase: at shutdown it marks this node as left after the sessions ended.
func (d *daemon) wireCluster() error {
	if !d.cfg.Cluster.Enabled() {
		return nil
	}
	reg, err := cluster.New(cluster.Options{
		Config:    d.cfg.Cluster,
		JetStream: d.events.JetStream(),
		Replicas:  d.events.Replicas(),
		Node:      d.node,
		Version:   version,
		Load:      d.load,
		Emitter:   d.emitter,
		OnLost: func(ctx context.Context, node string) {
			ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			n, err := d.events.EndNode(ectx, node, d.node)
			if err != nil {
				d.log.Error("cluster: ending a lost node's objects", "node", node, "ended", n, "err", err)
			}
		},
		Logger: d.log.With("component", "cluster"),
	})
	if err != nil {
		return err
	}
	d.nodes = reg
	placer := cluster.NewPlacer(reg, func() []string {
		var names []string
		for _, r := range d.hub.Rooms() {
			names = append(names, r.Name())
		}
		return names
	})
	d.router = &cluster.Router{Placer: placer}
	d.add(phaseCore, "placement", placer.Run)
	d.api.AddStatus("nodes", func(context.Context) any { return reg.Nodes() })
	d.api.Handle("GET /v1/nodes", d.gate.Admin(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		api.WriteJSON(w, http.StatusOK, map[string]any{"nodes": reg.Nodes()})
	})))
	d.add(phaseCore, "cluster", reg.Run)
	return nil
}

// load is this node's load for its heartbeat.
func (d *daemon) load() cluster.Load {
	l := cluster.Load{CPU: d.hub.CPUUsage() / d.cfg.Limits.CPUBudget}
	for _, r := range d.hub.Rooms() {
		l.Sessions += len(r.Participants())
	}
	for _, f := range d.egressWorkers {
		l.Egress += f()
	}
	return l
}
