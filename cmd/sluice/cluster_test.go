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
// holds node.joined of each, and `sluice status` shows them. Placement: a WHIP offer to any
// node is redirected (307) to the least loaded node, which then hosts the room; GET /v1/rooms
// on any node lists every room with its node; DELETE of a room through another node reaches
// its owner. Node loss: kill -9 of the node hosting a published room; a survivor emits
// node.left (lost) once, and the stream, track, participant and room the dead node left open
// get their terminal event exactly once.
func TestClusterJoinPlaceAndNodeLoss(t *testing.T) {
	nodes := startCluster(t, 3)
	byURL := map[string]*daemonProc{}
	for _, d := range nodes {
		byURL[d.URL] = d
		sfutest.WaitFor(t, d.URL+" lists 3 nodes", 60*time.Second, func() bool { return len(clusterNodes(t, d)) == 3 })
	}
	out, err := nodes[0].cli("status")
	if err != nil || !strings.Contains(out, "nodes: 3") || !strings.Contains(out, "n1") || !strings.Contains(out, "SESSIONS") {
		t.Fatalf("sluice status: %v\n%s", err, out)
	}
	for _, d := range nodes {
		if strings.Contains(d.logs.String(), "route-secret-xyz") {
			t.Fatal("the route password is in a log")
		}
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

	// placement: lobby offered to n2 lands on the least loaded node (all idle: n0, the lowest id)
	lobby := newWHIPPublisher(t, nodes[2].URL+"/whip/lobby")
	defer lobby.close()
	host := hostOf(t, byURL, lobby.session.Resource)
	sfutest.WaitFor(t, "the lobby host's load shows the publisher", 10*time.Second, func() bool {
		for _, n := range clusterNodes(t, nodes[1]) {
			if n.URL == host.URL && n.Load.Sessions == 1 {
				return true
			}
		}
		return false
	})
	stage := newWHIPPublisher(t, nodes[0].URL+"/whip/stage")
	defer stage.close()
	if h := hostOf(t, byURL, stage.session.Resource); h == host {
		t.Fatalf("stage placed on %s, the node with the lobby publisher, not on an idle one", h.URL)
	}
	sfutest.WaitFor(t, "GET /v1/rooms on every node lists both rooms", 10*time.Second, func() bool {
		for _, d := range nodes {
			if got := roomNodes(t, d); len(got) != 2 || got["lobby"] == "" || got["stage"] == "" || got["lobby"] == got["stage"] {
				return false
			}
		}
		return true
	})
	var other *daemonProc // a node hosting neither room
	for _, d := range nodes {
		if d != host && d != hostOf(t, byURL, stage.session.Resource) {
			other = d
		}
	}
	if code, err := apiDo(other.URL, http.MethodDelete, "/v1/rooms/stage", ""); err != nil || code != http.StatusOK && code != http.StatusNoContent {
		t.Fatalf("DELETE /v1/rooms/stage through %s: %d %v", other.URL, code, err)
	}
	other.waitEvent(t, "room.finished of stage (deleted)", 20*time.Second, func(e *sfu.Event) bool {
		return e.Type == sfu.EventRoomFinished && e.RoomName() == "stage" && e.Reason == "deleted"
	})

	// node loss
	killed := time.Now()
	host.kill()
	left := other.waitEvent(t, "node.left of the lobby's host", 30*time.Second, func(e *sfu.Event) bool {
		return e.Type == sfu.EventNodeLeft && e.Node.Address == host.URL
	})
	t.Logf("node.left %s, %s after the kill", left.Reason, time.Since(killed).Round(100*time.Millisecond))
	if left.Reason != sfu.ReasonNodeLost {
		t.Fatalf("node.left reason %q, want lost", left.Reason)
	}
	want := []string{sfu.EventStreamUnpublished, sfu.EventTrackUnpublished, sfu.EventParticipantLeft, sfu.EventRoomFinished}
	other.waitEvent(t, "terminal events of the lost node's room", 30*time.Second, func(*sfu.Event) bool {
		evs := other.loggedEvents()
		for _, typ := range want {
			if countRoomType(evs, "lobby", typ) == 0 {
				return false
			}
		}
		return true
	})
	time.Sleep(2 * time.Second) // room for a duplicate from the other survivor
	evs := other.loggedEvents()
	if n := countNodeLeft(evs, left.Node.ID); n != 1 {
		t.Errorf("%d node.left of %s, want 1", n, left.Node.ID)
	}
	for _, typ := range want {
		begins := map[string]string{sfu.EventStreamUnpublished: sfu.EventStreamPublishing, sfu.EventTrackUnpublished: sfu.EventTrackPublished,
			sfu.EventParticipantLeft: sfu.EventParticipantJoined, sfu.EventRoomFinished: sfu.EventRoomStarted}[typ]
		if b, e := countRoomType(evs, "lobby", begins), countRoomType(evs, "lobby", typ); b != e {
			t.Errorf("room lobby: %d %s but %d %s", b, begins, e, typ)
		}
	}
}

// hostOf returns the node whose URL a WHIP session resource starts with.
func hostOf(t *testing.T, byURL map[string]*daemonProc, resource string) *daemonProc {
	t.Helper()
	for u, d := range byURL {
		if strings.HasPrefix(resource, u+"/") {
			return d
		}
	}
	t.Fatalf("session resource %s is on no node", resource)
	return nil
}

// roomNodes reads GET /v1/rooms: room name -> node.
func roomNodes(t *testing.T, d *daemonProc) map[string]string {
	t.Helper()
	resp, err := http.Get(d.URL + "/v1/rooms")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var body struct {
		Rooms []struct {
			Name string `json:"name"`
			Node string `json:"node"`
		} `json:"rooms"`
	}
	if json.NewDecoder(resp.Body).Decode(&body) != nil {
		return nil
	}
	out := map[string]string{}
	for _, r := range body.Rooms {
		out[r.Name] = r.Node
	}
	return out
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
