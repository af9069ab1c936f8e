package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Lease of webhook delivery among the nodes that share an external log: a key in a bucket whose
// entries expire after leaseTTL, created by the node that delivers and renewed every
// leaseTTL/3. Expiry is the server's, so node clocks do not matter.
const (
	leaseBucket = "sluice_lease"
	leaseKey    = "deliverer"
	leaseTTL    = 15 * time.Second
)

// leadLoop delivers while this node holds the lease, and waits for it otherwise, until ctx ends.
func (d *Deliverer) leadLoop(ctx context.Context) {
	kv, err := d.events.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: leaseBucket, TTL: leaseTTL, Replicas: d.events.Replicas(),
		Description: "which sluice node delivers webhooks"})
	if err != nil {
		d.log.Error("webhooks: lease bucket; not delivering", "err", err)
		<-ctx.Done()
		return
	}
	node := []byte(d.events.opts.Node)
	waiting := false
	for ctx.Err() == nil {
		rev, err := kv.Create(ctx, leaseKey, node)
		if err != nil {
			if !waiting && errors.Is(err, jetstream.ErrKeyExists) {
				holder := "another node"
				if e, gerr := kv.Get(ctx, leaseKey); gerr == nil {
					holder = string(e.Value())
				}
				d.log.Info("webhooks: another node delivers; standing by", "holder", holder)
				waiting = true
			} else if !errors.Is(err, jetstream.ErrKeyExists) && ctx.Err() == nil {
				d.log.Warn("webhooks: taking the delivery lease", "err", err)
			}
			select {
			case <-time.After(leaseTTL / 5):
			case <-ctx.Done():
			}
			continue
		}
		waiting = false
		d.log.Info("webhooks: this node delivers the webhooks of every node")
		lctx, cancel := context.WithCancel(ctx)
		renewed := make(chan struct{})
		go func() {
			defer close(renewed)
			tick := time.NewTicker(leaseTTL / 3)
			defer tick.Stop()
			for {
				select {
				case <-lctx.Done():
					return
				case <-tick.C:
				}
				next, err := kv.Update(lctx, leaseKey, node, rev)
				if err != nil {
					if lctx.Err() == nil {
						d.log.Warn("webhooks: lost the delivery lease; stopping deliveries", "err", err)
						cancel()
					}
					return
				}
				rev = next
			}
		}()
		d.serve(lctx)
		cancel()
		<-renewed
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = kv.Delete(rctx, leaseKey, jetstream.LastRevision(rev)) // hand over at once
		rcancel()
	}
}

// watchEndpoints applies the endpoint changes of the state bucket (made by this node's API, by
// another node's, or by a 410) to the endpoint list and, where this node delivers, to the
// dispatchers.
func (d *Deliverer) watchEndpoints(ctx context.Context) {
	w, err := d.store.kv.WatchFiltered(ctx, []string{"endpoint.*"})
	if err != nil {
		d.log.Error("webhooks: watching endpoints", "err", err)
		return
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e != nil {
				d.applyStored(e)
			}
		}
	}
}

func (d *Deliverer) applyStored(e jetstream.KeyValueEntry) {
	id := e.Key()[len("endpoint."):]
	var se *storedEndpoint
	if e.Operation() == jetstream.KeyValuePut {
		se = &storedEndpoint{}
		if err := json.Unmarshal(e.Value(), se); err != nil {
			return
		}
	}
	d.mu.Lock()
	cur := d.endpoints[id]
	if sameEndpoint(cur, se) {
		d.mu.Unlock()
		return
	}
	d.mu.Unlock()
	d.stop(id) // saves its position; a new one starts from there with the new settings
	d.mu.Lock()
	defer d.mu.Unlock()
	if se == nil {
		delete(d.endpoints, id)
		return
	}
	d.endpoints[id] = se
	if !se.Disabled {
		d.startLocked(se)
	}
}

func sameEndpoint(a, b *storedEndpoint) bool {
	if a == nil || b == nil {
		return a == b
	}
	ja, _ := json.Marshal(a) //nolint:gosec // compared in memory, never written out
	jb, _ := json.Marshal(b) //nolint:gosec // as above
	return string(ja) == string(jb)
}
