package cluster

import "testing"

// The least loaded node: CPU in tenths of the budget first, then sessions and egress, then id.
func TestLoadOrder(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b Load
		less bool // a before b
	}{
		{"cpu noise is ignored", Load{CPU: 0.04, Sessions: 1}, Load{CPU: 0.01, Sessions: 2}, true},
		{"a spent budget weighs more than sessions", Load{CPU: 0.95}, Load{CPU: 0.2, Sessions: 300}, false},
		{"an egress worker is ten sessions", Load{Egress: 1}, Load{Sessions: 9}, false},
		{"fewer sessions first", Load{Sessions: 3}, Load{Sessions: 4}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.a.score() < tc.b.score(); got != tc.less {
				t.Errorf("score %v < %v = %v, want %v", tc.a.score(), tc.b.score(), got, tc.less)
			}
		})
	}
	r := &Registry{nodes: map[string]Node{"b": {ID: "b"}, "a": {ID: "a"}, "c": {ID: "c", Load: Load{Sessions: 0}}}, self: Node{ID: "c"}}
	if n, _ := r.leastLoaded(); n.ID != "a" {
		t.Errorf("least loaded of three idle nodes: %s, want a (lowest id)", n.ID)
	}
	r.nodes["a"] = Node{ID: "a", Load: Load{Sessions: 1}}
	if n, _ := r.leastLoaded(); n.ID != "b" {
		t.Errorf("least loaded: %s, want b", n.ID)
	}
}

// Config: a single node needs nothing; a cluster validates its routes and public URL, and the
// replicas follow the node count.
func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.Name, ok.PublicURL, ok.Peers = "c", "http://127.0.0.1:8800", []string{"127.0.0.1:6223", "nats-route://127.0.0.1:6224"}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		err  bool
	}{
		{"single node", func(c *Config) { *c = DefaultConfig() }, false},
		{"cluster", func(*Config) {}, false},
		{"peers without a name", func(c *Config) { c.Name = "" }, true},
		{"no public url", func(c *Config) { c.PublicURL = "" }, true},
		{"credentials in a peer", func(c *Config) { c.Peers = []string{"nats-route://u:p@127.0.0.1:6223"} }, true},
		{"user without password", func(c *Config) { c.User = "u" }, true},
		{"ttl shorter than two beats", func(c *Config) { c.NodeTTL = c.Heartbeat }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.edit(&c)
			if err := c.Validate(); (err != nil) != tc.err {
				t.Errorf("Validate() = %v, want error %v", err, tc.err)
			}
		})
	}
	if ok.Replicas() != 3 {
		t.Errorf("replicas of 3 nodes: %d", ok.Replicas())
	}
	two := ok
	two.Peers = two.Peers[:1]
	if two.Replicas() != 2 || DefaultConfig().Replicas() != 1 {
		t.Errorf("replicas: 2 nodes %d, single %d", two.Replicas(), DefaultConfig().Replicas())
	}
	ok.User, ok.Password = "u", "secret"
	_, _, peers, _, err := ok.Routes()
	if err != nil || peers[0].User.String() != "u:secret" {
		t.Errorf("routes carry the credentials: %v %v", peers, err)
	}
}
