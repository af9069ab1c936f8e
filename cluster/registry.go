package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-media/sluice/sfu"
)

// Buckets of the registry.
const (
	bucketNodes  = "sluice_nodes"
	bucketClaims = "sluice_node_claims"
)

// Load is what a node reports of its load in its heartbeat; placement picks the least loaded.
type Load struct {
	// CPU is the share of the node's CPU budget in use (1 = the budget is spent).
	CPU float64 `json:"cpu"`
	// Sessions are the participants of the node's rooms (publishers and viewers).
	Sessions int `json:"sessions"`
	// Egress are the node's recordings, broadcasts and other egress workers.
	Egress int `json:"egress"`
}

// score orders loads: lower is less loaded. The CPU budget weighs most, in steps of a tenth
// of the budget (finer differences are measurement noise), then sessions; an egress worker
// counts as ten sessions (an ffmpeg or a muxer per worker).
func (l Load) score() float64 {
	return math.Floor(l.CPU*10)*1000 + float64(l.Sessions) + 10*float64(l.Egress)
}

// Node is one member of the cluster as its heartbeat shows it.
type Node struct {
	ID      string `json:"id"`
	URL     string `json:"url"`
	Version string `json:"version"`
	// Incarnation changes at each start of the node's process.
	Incarnation string    `json:"incarnation"`
	StartedAt   time.Time `json:"started_at"`
	Load        Load      `json:"load"`
	// Left is set by a node that is shutting down cleanly.
	Left bool `json:"left,omitempty"`
	// Updated is when the heartbeat was stored (set by the reader).
	Updated time.Time `json:"updated"`
}

// Options build a Registry.
type Options struct {
	Config Config
	// JetStream is the event log's: the registry's buckets live beside the log's.
	JetStream jetstream.JetStream
	Replicas  int
	Node      string
	Version   string
	// Load reports this node's load at each heartbeat.
	Load    func() Load
	Emitter sfu.Emitter
	// OnLost is called on the one node that claimed a lost node, before node.left: it ends
	// the lost node's open objects and takes over its work.
	OnLost func(ctx context.Context, node string)
	Logger *slog.Logger
}

// Registry keeps this node's heartbeat in the nodes bucket and watches the other nodes':
// it emits node.joined when this node starts, node.left (shutdown) when it stops, and
// node.left (lost) for a node whose heartbeat expired, from exactly one surviving node.
//
// Lifecycle: New validates; Run does the work until ctx ends. Nodes is safe for concurrent
// use at any time.
type Registry struct {
	opts Options
	log  *slog.Logger
	self Node

	mu    sync.Mutex
	nodes map[string]Node // the live nodes, this one included, as last read
	kv    jetstream.KeyValue
}

// New validates the options and starts nothing.
func New(opts Options) (*Registry, error) {
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	if opts.JetStream == nil || opts.Emitter == nil || opts.Node == "" {
		return nil, errors.New("cluster: JetStream, Emitter and Node are required")
	}
	if opts.Load == nil {
		opts.Load = func() Load { return Load{} }
	}
	if opts.OnLost == nil {
		opts.OnLost = func(context.Context, string) {}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	self := Node{ID: opts.Node, URL: opts.Config.PublicURL, Version: opts.Version, Incarnation: sfu.NewID("inc_"), StartedAt: time.Now().UTC()}
	return &Registry{opts: opts, log: opts.Logger, self: self, nodes: map[string]Node{}}, nil
}

// Self returns this node's id.
func (r *Registry) Self() string { return r.self.ID }

// Nodes returns the live nodes, this one first, then by id.
func (r *Registry) Nodes() []Node {
	r.mu.Lock()
	out := make([]Node, 0, len(r.nodes))
	for _, n := range r.nodes {
		out = append(out, n)
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if (out[i].ID == r.self.ID) != (out[j].ID == r.self.ID) {
			return out[i].ID == r.self.ID
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Node returns a live node by id.
func (r *Registry) Node(id string) (Node, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, ok := r.nodes[id]
	return n, ok
}

// bucket creates or opens a bucket, retrying until ctx ends: a replicated bucket waits for
// its peers, which may be slow to answer while the cluster forms.
func (r *Registry) bucket(ctx context.Context, name string, ttl time.Duration, desc string) (jetstream.KeyValue, error) {
	for {
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		kv, err := r.opts.JetStream.CreateOrUpdateKeyValue(tctx, jetstream.KeyValueConfig{Bucket: name, TTL: ttl,
			Replicas: max(r.opts.Replicas, 1), Storage: jetstream.FileStorage, Description: desc})
		cancel()
		if err == nil {
			return kv, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("cluster: bucket %s: %w", name, err)
		}
		r.log.Warn("cluster: creating a bucket; retrying", "bucket", name, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// Run heartbeats and watches until ctx ends, then marks this node as left.
func (r *Registry) Run(ctx context.Context) error {
	kv, err := r.bucket(ctx, bucketNodes, r.opts.Config.NodeTTL, "sluice nodes: heartbeats with load")
	if err != nil {
		return nil //nolint:nilerr // stopped before the cluster answered
	}
	claims, err := r.bucket(ctx, bucketClaims, 24*time.Hour, "sluice: which node handled a lost node")
	if err != nil {
		return nil //nolint:nilerr // stopped before the cluster answered
	}
	r.mu.Lock()
	r.kv = kv
	r.mu.Unlock()
	if err := r.beat(ctx, kv, false); err != nil && ctx.Err() == nil {
		r.log.Warn("cluster: first heartbeat", "err", err)
	}
	r.opts.Emitter.Emit(r.event(sfu.EventNodeJoined, r.self, ""))
	r.log.Info("cluster: joined", "node", r.self.ID, "url", r.self.URL)
	known := map[string]Node{}
	tick := time.NewTicker(r.opts.Config.Heartbeat)
	defer tick.Stop()
	for {
		r.scan(ctx, kv, claims, known)
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := r.beat(sctx, kv, true); err != nil {
				r.log.Warn("cluster: marking this node as left", "err", err)
			}
			cancel()
			r.opts.Emitter.Emit(r.event(sfu.EventNodeLeft, r.self, sfu.ReasonNodeShutdown))
			return nil
		case <-tick.C:
			if err := r.beat(ctx, kv, false); err != nil && ctx.Err() == nil {
				r.log.Warn("cluster: heartbeat", "err", err)
			}
		}
	}
}

// beat stores this node's entry with its current load.
func (r *Registry) beat(ctx context.Context, kv jetstream.KeyValue, left bool) error {
	n := r.self
	n.Load, n.Left = r.opts.Load(), left
	b, err := json.Marshal(n)
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, nodeKey(n.ID), b)
	return err
}

// scan reads every heartbeat, and hands the nodes whose heartbeat expired to lost.
func (r *Registry) scan(ctx context.Context, kv, claims jetstream.KeyValue, known map[string]Node) {
	keys, err := kv.Keys(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		if ctx.Err() == nil {
			r.log.Warn("cluster: reading the nodes", "err", err)
		}
		return
	}
	live := map[string]Node{}
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue // expired between Keys and Get
		}
		var n Node
		if json.Unmarshal(e.Value(), &n) != nil || n.ID == "" {
			continue
		}
		n.Updated = e.Created()
		if n.Left {
			delete(known, n.ID)
			continue
		}
		live[n.ID] = n
		if k, ok := known[n.ID]; ok && k.Incarnation != n.Incarnation && n.ID != r.self.ID {
			// restarted within the TTL: the node reconciles its own previous objects
			r.log.Info("cluster: a node restarted", "node", n.ID)
		}
		known[n.ID] = n
	}
	r.mu.Lock()
	r.nodes = live
	r.mu.Unlock()
	for id, n := range known {
		if _, ok := live[id]; ok {
			continue
		}
		delete(known, id)
		if id == r.self.ID {
			continue // our own entry expired: we were cut off; the next beat puts it back
		}
		r.lost(ctx, claims, n)
	}
}

// lost handles a node whose heartbeat expired, on the one node that claims it first.
func (r *Registry) lost(ctx context.Context, claims jetstream.KeyValue, n Node) {
	if _, err := claims.Create(ctx, "lost."+nodeKey(n.ID)+"."+n.Incarnation, []byte(r.self.ID)); err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) && ctx.Err() == nil {
			r.log.Warn("cluster: claiming a lost node", "node", n.ID, "err", err)
		}
		return
	}
	r.log.Warn("cluster: a node was lost (its heartbeat expired); this node ends its objects", "node", n.ID, "last_heartbeat", n.Updated)
	r.opts.OnLost(ctx, n.ID)
	r.opts.Emitter.Emit(r.event(sfu.EventNodeLeft, n, sfu.ReasonNodeLost))
}

func (r *Registry) event(typ string, n Node, reason string) *sfu.Event {
	return &sfu.Event{Type: typ, Node: sfu.NodeRef{ID: n.ID, Address: n.URL, Version: n.Version}, Reason: reason}
}

// nodeKey makes a node id a valid key token.
func nodeKey(id string) string {
	b := []byte(id)
	for i, c := range b {
		if !keyByte(c) {
			b[i] = '_'
		}
	}
	return string(b)
}

// keyByte reports whether c may stand in a key token as it is.
func keyByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}
