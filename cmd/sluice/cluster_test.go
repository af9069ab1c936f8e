package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/cluster"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// startCluster runs n `sluice serve` processes (nodes n0, n1, …) whose embedded NATS servers
// route to each other, each with its own ports and data dir. They start together: JetStream
// needs a quorum of them before any is ready.
func startCluster(t *testing.T, n int) []*daemonProc {
	t.Helper()
	routes := make([]int, n)
	for i := range routes {
		routes[i] = sfutest.FreeTCPPort(t)
	}
	nodes := make([]*daemonProc, n)
	for i := range nodes {
		var peers []string
		for j, p := range routes {
			if j != i {
				peers = append(peers, fmt.Sprintf("%q", fmt.Sprintf("127.0.0.1:%d", p)))
			}
		}
		extra := fmt.Sprintf("cluster: { name: test, listen: \"127.0.0.1:%d\", peers: [%s], user: sluice, password: route-secret-xyz, heartbeat: 500ms, node_ttl: 3s }\n",
			routes[i], strings.Join(peers, ", "))
		srtPort, _ := sfutest.FreeUDPPair(t)
		extra += fmt.Sprintf("srt: { listen: \"127.0.0.1:%d\" }\n", srtPort)
		d := newDaemonProc(t, t.TempDir(), extra)
		d.env = []string{fmt.Sprintf("SLUICE_NODE_NAME=n%d", i), "SLUICE_CLUSTER_PUBLIC_URL=" + d.URL}
		nodes[i] = d
	}
	for _, d := range nodes {
		d.launch()
	}
	for _, d := range nodes {
		d.waitReady(90 * time.Second)
	}
	return nodes
}

// clusterNodes reads GET /v1/nodes.
func clusterNodes(t *testing.T, d *daemonProc) []cluster.Node {
	t.Helper()
	resp, err := http.Get(d.URL + "/v1/nodes")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var body struct {
		Nodes []cluster.Node `json:"nodes"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&body) != nil {
		return nil
	}
	return body.Nodes
}

// Three nodes form a cluster: each lists the three with their load, the replicated event log
// holds node.joined of each, and `sluice status` shows them. A WHIP publisher on n2, then
// kill -9 of n2: a survivor emits node.left (lost) once, and the stream, track, participant
// and room n2 left open get their terminal event exactly once, from a surviving node.
func TestClusterJoinAndNodeLoss(t *testing.T) {
	nodes := startCluster(t, 3)
	for _, d := range nodes {
		sfutest.WaitFor(t, d.URL+" lists 3 nodes", 20*time.Second, func() bool { return len(clusterNodes(t, d)) == 3 })
	}
	out, err := nodes[0].cli("status")
	if err != nil || !strings.Contains(out, "nodes: 3") || !strings.Contains(out, "n1") || !strings.Contains(out, "SESSIONS") {
		t.Fatalf("sluice status: %v\n%s", err, out)
	}
	if strings.Contains(nodes[0].logs.String(), "route-secret-xyz") {
		t.Fatal("the route password is in the log")
	}
	nodes[0].waitEvent(t, "node.joined of all three", 20*time.Second, func(e *sfu.Event) bool {
		joined := map[string]bool{}
		for _, ev := range nodes[0].loggedEvents() {
			if ev.Type == sfu.EventNodeJoined && ev.Node.Address != "" {
				joined[ev.Node.ID] = true
			}
		}
		return len(joined) == 3
	})

	pub := newWHIPPublisher(t, nodes[2].URL+"/whip/lobby")
	defer pub.close()
	nodes[0].waitEvent(t, "stream.publishing on n2", 20*time.Second, func(e *sfu.Event) bool {
		return e.Type == sfu.EventStreamPublishing && e.RoomName() == "lobby"
	})
	sfutest.WaitFor(t, "n2's load shows the publisher", 10*time.Second, func() bool {
		for _, n := range clusterNodes(t, nodes[0]) {
			if n.ID == "n2" && n.Load.Sessions == 1 {
				return true
			}
		}
		return false
	})
	killed := time.Now()
	nodes[2].kill()
	left := nodes[0].waitEvent(t, "node.left of n2", 30*time.Second, func(e *sfu.Event) bool {
		return e.Type == sfu.EventNodeLeft && e.Node.ID == "n2"
	})
	t.Logf("node.left %s, %s after the kill", left.Reason, time.Since(killed).Round(100*time.Millisecond))
	if left.Reason != sfu.ReasonNodeLost {
		t.Fatalf("node.left reason %q, want lost", left.Reason)
	}
	want := []string{sfu.EventStreamUnpublished, sfu.EventTrackUnpublished, sfu.EventParticipantLeft, sfu.EventRoomFinished}
	nodes[1].waitEvent(t, "terminal events of n2's room", 30*time.Second, func(*sfu.Event) bool {
		evs := nodes[1].loggedEvents()
		for _, typ := range want {
			if countRoomType(evs, "lobby", typ) == 0 {
				return false
			}
		}
		return true
	})
	time.Sleep(2 * time.Second) // room for a duplicate from the other survivor
	evs := nodes[1].loggedEvents()
	if n := countNodeLeft(evs, "n2"); n != 1 {
		t.Errorf("%d node.left of n2, want 1", n)
	}
	for _, typ := range want {
		begins := map[string]string{sfu.EventStreamUnpublished: sfu.EventStreamPublishing, sfu.EventTrackUnpublished: sfu.EventTrackPublished,
			sfu.EventParticipantLeft: sfu.EventParticipantJoined, sfu.EventRoomFinished: sfu.EventRoomStarted}[typ]
		if b, e := countRoomType(evs, "lobby", begins), countRoomType(evs, "lobby", typ); b != e {
			t.Errorf("room lobby: %d %s but %d %s", b, begins, e, typ)
		}
	}
}

func countRoomType(evs []sfu.Event, room, typ string) int {
	n := 0
	for _, e := range evs {
		if e.Type == typ && e.RoomName() == room {
			n++
		}
	}
	return n
}

func countNodeLeft(evs []sfu.Event, node string) int {
	n := 0
	for _, e := range evs {
		if e.Type == sfu.EventNodeLeft && e.Node.ID == node {
			n++
		}
	}
	return n
}
