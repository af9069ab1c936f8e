package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// bucketRooms holds the placement of rooms: room -> node, with a lease the owner renews.
const bucketRooms = "sluice_rooms"

// LeaseTTL is how long a room's placement outlives its owner's last renewal.
const LeaseTTL = 15 * time.Second

// Placement is a room's entry in the placement bucket.
type Placement struct {
	Room  string    `json:"room"`
	Node  string    `json:"node"`
	Since time.Time `json:"since"`
}

// Placer places rooms on nodes: the first session that touches a room chooses the least
// loaded live node, recorded in a bucket whose entries expire LeaseTTL after the owner last
// renewed them. Its owner renews the rooms it hosts (Renew), so a room lives on one node at a
// time; a room whose owner was lost is placed again by the next session.
//
// Lifecycle: NewPlacer starts nothing; Run creates the bucket and renews until ctx ends.
// Owner is safe for concurrent use and answers ErrNotReady before Run created the bucket.
type Placer struct {
	reg   *Registry
	local func() []string // the rooms this node hosts
	log   *slog.Logger

	ready chan struct{}
	kv    jetstream.KeyValue
}

// ErrNotReady is returned before the placement bucket exists.
var ErrNotReady = errors.New("cluster: placement not ready")

// NewPlacer builds a placer on the registry's cluster; local lists the rooms this node hosts.
func NewPlacer(reg *Registry, local func() []string) *Placer {
	return &Placer{reg: reg, local: local, log: reg.log, ready: make(chan struct{})}
}

// Run creates the bucket, then renews the leases of the local rooms every LeaseTTL/3.
func (p *Placer) Run(ctx context.Context) error {
	kv, err := p.reg.bucket(ctx, bucketRooms, LeaseTTL, "sluice rooms: which node hosts each room")
	if err != nil {
		return nil //nolint:nilerr // stopped before the cluster answered
	}
	p.kv = kv
	close(p.ready)
	tick := time.NewTicker(LeaseTTL / 3)
	defer tick.Stop()
	for {
		p.renew(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// renew takes or renews the lease of every local room. A room that another live node holds
// (two sessions raced on two nodes through a protocol that cannot redirect) is logged.
func (p *Placer) renew(ctx context.Context) {
	self := p.reg.Self()
	for _, room := range p.local() {
		key := roomKey(room)
		e, err := p.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			_, err = p.kv.Create(ctx, key, p.value(room))
		case err != nil:
		default:
			var cur Placement
			_ = json.Unmarshal(e.Value(), &cur)
			if cur.Node != self {
				if _, live := p.reg.Node(cur.Node); live {
					p.log.Warn("cluster: a room is open here while it is placed on another node", "room", room, "owner", cur.Node)
					continue
				}
			}
			_, err = p.kv.Update(ctx, key, p.value(room), e.Revision())
		}
		if err != nil && ctx.Err() == nil {
			p.log.Warn("cluster: renewing a room's placement", "room", room, "err", err)
		}
	}
}

func (p *Placer) value(room string) []byte {
	b, _ := json.Marshal(Placement{Room: room, Node: p.reg.Self(), Since: time.Now().UTC()})
	return b
}

// Owner returns the node that hosts room, placing the room on the least loaded live node
// when it has no live owner yet (create is false: only look, never place).
func (p *Placer) Owner(ctx context.Context, room string, create bool) (Node, bool, error) {
	select {
	case <-p.ready:
	default:
		return Node{}, false, ErrNotReady
	}
	key := roomKey(room)
	for range 5 {
		e, err := p.kv.Get(ctx, key)
		var rev uint64
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return Node{}, false, fmt.Errorf("cluster: reading the placement of %s: %w", room, err)
		default:
			var cur Placement
			if json.Unmarshal(e.Value(), &cur) == nil {
				if n, live := p.reg.Node(cur.Node); live {
					return n, true, nil
				}
			}
			rev = e.Revision() // its owner is gone
		}
		if !create {
			return Node{}, false, nil
		}
		n, ok := p.reg.leastLoaded()
		if !ok {
			return Node{}, false, ErrNotReady
		}
		b, _ := json.Marshal(Placement{Room: room, Node: n.ID, Since: time.Now().UTC()})
		if rev == 0 {
			_, err = p.kv.Create(ctx, key, b)
		} else {
			_, err = p.kv.Update(ctx, key, b, rev)
		}
		if err == nil {
			p.log.Info("cluster: placed a room", "room", room, "node", n.ID, "load", n.Load)
			return n, true, nil
		}
		// another node placed it meanwhile: read its choice
	}
	return Node{}, false, fmt.Errorf("cluster: placing %s: too many concurrent changes", room)
}

// leastLoaded returns the live node with the lowest load score (ties: the lowest id).
func (r *Registry) leastLoaded() (Node, bool) {
	var best Node
	found := false
	for _, n := range r.Nodes() {
		if !found || n.Load.score() < best.Load.score() || n.Load.score() == best.Load.score() && n.ID < best.ID {
			best, found = n, true
		}
	}
	return best, found
}

// roomKey makes a room name a key: room names may hold characters keys may not, so the name
// is hex-encoded when it has any.
func roomKey(room string) string {
	k := nodeKey(room)
	if k == room {
		return "r." + k
	}
	return fmt.Sprintf("x.%x", room)
}
