// Package cluster joins sluice nodes into one cluster on NATS JetStream: the node registry
// (heartbeats with load in a key-value bucket), node.joined and node.left events, and the
// placement of rooms on nodes. It owns no transport of its own: every exchange between nodes
// goes through the JetStream of the event log.
package cluster

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config is the `cluster:` section. A config without a name is a single node, as before
// clustering existed.
type Config struct {
	// Name is the NATS cluster name, the same on every node; "" is no cluster.
	Name string `yaml:"name"`
	// Listen is where the embedded NATS server accepts its peers' routes (default ":6222").
	Listen string `yaml:"listen"`
	// Peers are the other nodes' route addresses (host:port or nats-route://host:port). Empty
	// with events.nats_url set: the nodes share that external NATS cluster instead.
	Peers []string `yaml:"peers"`
	// User and Password authenticate routes between the nodes (Password may come from
	// PasswordFile). Never logged.
	User         string `yaml:"user"`
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	// PublicURL is this node's HTTP base URL as clients reach it: WHIP and WHEP requests for a
	// room placed on this node are redirected here by the other nodes.
	PublicURL string `yaml:"public_url"`
	// Heartbeat is the period of the node's registry entry; a node whose entry is older than
	// NodeTTL is lost.
	Heartbeat time.Duration `yaml:"heartbeat"`
	NodeTTL   time.Duration `yaml:"node_ttl"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{Listen: ":6222", Heartbeat: 2 * time.Second, NodeTTL: 6 * time.Second}
}

// Enabled reports whether the node is part of a cluster.
func (c Config) Enabled() bool { return c.Name != "" }

// Validate reports the first invalid value.
func (c Config) Validate() error {
	if !c.Enabled() {
		if len(c.Peers) > 0 {
			return errors.New("peers: set name too")
		}
		return nil
	}
	if strings.ContainsAny(c.Name, " .*>") {
		return fmt.Errorf("name: %q has a space, dot or wildcard", c.Name)
	}
	if _, _, err := c.listenAddr(); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	for i, p := range c.Peers {
		if _, err := peerURL(p); err != nil {
			return fmt.Errorf("peers.%d: %w", i, err)
		}
	}
	if c.Password != "" && c.PasswordFile != "" {
		return errors.New("password and password_file: set one")
	}
	if (c.User == "") != (c.Password == "" && c.PasswordFile == "") {
		return errors.New("user and password: set both or neither")
	}
	if c.PublicURL == "" {
		return errors.New("public_url: required in a cluster (clients are redirected to it)")
	}
	if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("public_url: %q is not an http(s) URL", c.PublicURL)
	}
	if c.Heartbeat < 100*time.Millisecond || c.NodeTTL < 2*c.Heartbeat {
		return errors.New("heartbeat, node_ttl: heartbeat at least 100ms, node_ttl at least twice the heartbeat")
	}
	return nil
}

// Nodes is the number of nodes the config names (itself and its peers); 0 with an external
// NATS cluster, whose size the config does not say.
func (c Config) Nodes() int {
	if len(c.Peers) == 0 {
		return 0
	}
	return len(c.Peers) + 1
}

// Replicas is the replication factor of the event log's streams and buckets: min(3, nodes),
// and 1 when the config does not say how many nodes there are.
func (c Config) Replicas() int { return max(1, min(3, c.Nodes())) }

// Routes returns the embedded server's route settings: the address to listen on and the
// peers' URLs; the password read from PasswordFile when set.
func (c Config) Routes() (host string, port int, peers []*url.URL, password string, err error) {
	host, port, err = c.listenAddr()
	if err != nil {
		return "", 0, nil, "", err
	}
	for _, p := range c.Peers {
		u, err := peerURL(p)
		if err != nil {
			return "", 0, nil, "", err
		}
		peers = append(peers, u)
	}
	password = c.Password
	if c.PasswordFile != "" {
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return "", 0, nil, "", fmt.Errorf("password_file: %w", err)
		}
		password = strings.TrimSpace(string(b))
	}
	if c.User != "" {
		for _, u := range peers {
			u.User = url.UserPassword(c.User, password)
		}
	}
	return host, port, peers, password, nil
}

func (c Config) listenAddr() (string, int, error) {
	host, p, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q has no port", c.Listen)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

func peerURL(p string) (*url.URL, error) {
	if !strings.Contains(p, "://") {
		p = "nats-route://" + p
	}
	u, err := url.Parse(p)
	if err != nil || u.Host == "" || u.Port() == "" {
		return nil, fmt.Errorf("%q is not host:port", p)
	}
	if u.User != nil {
		return nil, errors.New("put credentials in user and password, not in the peer address")
	}
	return u, nil
}
