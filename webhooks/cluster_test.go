package webhooks

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// startNATS runs a JetStream server on a random loopback port: the "external" log of a cluster.
func startNATS(t *testing.T) string {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv.ClientURL()
}

// Two nodes on one external log: each event is delivered once (by the node holding the lease),
// and when that node stops the other takes over from the saved position.
func TestClusterSharesDeliveries(t *testing.T) {
	url := startNATS(t)
	rx := newReceiver(t, nil)
	cfg := testConfig(EndpointConfig{ID: "e", URL: rx.srv.URL, Secret: rx.secret})
	type node struct {
		log    *Log
		d      *Deliverer
		cancel context.CancelFunc
		done   chan error
	}
	start := func(name string) *node {
		l := openTestLog(t, t.TempDir(), func(o *LogOptions) { o.Node = name; o.Config.NATSURL = url })
		d, err := NewDeliverer(DeliveryOptions{Config: cfg, Log: l, CursorInterval: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		n := &node{log: l, d: d, cancel: cancel, done: make(chan error, 1)}
		go func() { n.done <- d.Run(ctx) }()
		t.Cleanup(func() { n.cancel(); <-n.done })
		return n
	}
	a := start("a")
	sfutest.WaitFor(t, "a ready", wait, func() bool { return len(a.d.Endpoints()) == 1 })
	b := start("b")
	<-b.d.Ready()
	for i := range 20 {
		n := a
		if i%2 == 1 {
			n = b
		}
		n.log.Emit(roomEvent(sfu.EventRoomUpdated, fmt.Sprintf("r%d", i%3)))
	}
	sfutest.WaitFor(t, "20 deliveries", wait, func() bool { return len(rx.delivered()) >= 20 })
	// an endpoint added through node b's API is delivered to by whichever node leads
	rx2 := newReceiver(t, nil)
	added, err := b.d.Add(context.Background(), AddRequest{URL: rx2.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	rx2.setSecret(added.Secret)
	sfutest.WaitFor(t, "node a knows the new endpoint", wait, func() bool { _, err := a.d.Endpoint(added.ID); return err == nil })
	// the leader (a, which started first) stops cleanly and hands over
	a.cancel()
	if err := <-a.done; err != nil {
		t.Fatal(err)
	}
	a.done <- nil // for the cleanup
	for range 10 {
		b.log.Emit(roomEvent(sfu.EventRoomUpdated, "after"))
	}
	sfutest.WaitFor(t, "30 deliveries", wait, func() bool { return len(rx.delivered()) >= 30 })
	sfutest.WaitFor(t, "the added endpoint's 10", wait, func() bool { return len(rx2.delivered()) >= 10 })
	got := rx.delivered()
	if len(got) != 30 {
		t.Fatalf("%d deliveries for 30 events: duplicates across nodes", len(got))
	}
	checkOrder(t, got)
	if rx.badSignatures() != 0 {
		t.Fatal("bad signatures")
	}
}
