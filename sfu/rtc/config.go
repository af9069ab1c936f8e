package rtc

import (
	"fmt"
	"net"
	"strings"
	"time"
)

// Config is the `webrtc:` section.
type Config struct {
	// Port is the one UDP port of every WebRTC session (ICE-UDP mux), and the ICE-TCP port; 0
	// picks a free one (tests).
	Port int `yaml:"port"`
	// BindIP restricts the media sockets to one local address ("" = all interfaces).
	BindIP string `yaml:"bind_ip"`
	// PublicIPs are advertised as host candidates instead of the local ones (NAT 1:1).
	PublicIPs []string `yaml:"public_ips"`
	// ICETCP also accepts ICE over TCP on Port.
	ICETCP bool `yaml:"ice_tcp"`
	// ICEServers are handed to clients (WHIP/WHEP Link headers) for their own gathering.
	ICEServers []ICEServer `yaml:"ice_servers"`
	// MaxPending caps WHIP/WHEP sessions whose ICE has not connected yet, in all, per client
	// address and per token (0 = the default).
	MaxPending         int `yaml:"max_pending"`
	MaxPendingPerIP    int `yaml:"max_pending_per_ip"`
	MaxPendingPerToken int `yaml:"max_pending_per_token"`
	// PendingTimeout ends a session whose ICE has not connected within it (0 = the default).
	PendingTimeout time.Duration `yaml:"pending_timeout"`
}

// Defaults of the pending-session limits, used where the config leaves 0.
const (
	DefaultMaxPending         = 512
	DefaultMaxPendingPerIP    = 64
	DefaultMaxPendingPerToken = 16
	DefaultPendingTimeout     = 15 * time.Second
)

// pendingLimits returns the pending-session limits with defaults for the zero values.
func (c Config) pendingLimits() (total, perIP, perToken int, timeout time.Duration) {
	or := func(v, d int) int {
		if v > 0 {
			return v
		}
		return d
	}
	timeout = c.PendingTimeout
	if timeout <= 0 {
		timeout = DefaultPendingTimeout
	}
	return or(c.MaxPending, DefaultMaxPending), or(c.MaxPendingPerIP, DefaultMaxPendingPerIP), or(c.MaxPendingPerToken, DefaultMaxPendingPerToken), timeout
}

// ICEServer is a STUN or TURN server for clients.
type ICEServer struct {
	URLs       []string `yaml:"urls"`
	Username   string   `yaml:"username"`
	Credential string   `yaml:"credential"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{Port: 8900, ICETCP: true, MaxPending: DefaultMaxPending, MaxPendingPerIP: DefaultMaxPendingPerIP,
		MaxPendingPerToken: DefaultMaxPendingPerToken, PendingTimeout: DefaultPendingTimeout}
}

// Validate reports the first invalid value.
func (c Config) Validate() error {
	if c.Port < 0 || c.Port > 65535 {
		return fmt.Errorf("port: %d is not a port number", c.Port)
	}
	if c.BindIP != "" && net.ParseIP(c.BindIP) == nil {
		return fmt.Errorf("bind_ip: %q is not an IP address", c.BindIP)
	}
	for i, ip := range c.PublicIPs {
		if net.ParseIP(ip) == nil {
			return fmt.Errorf("public_ips.%d: %q is not an IP address", i, ip)
		}
	}
	if c.MaxPending < 0 || c.MaxPendingPerIP < 0 || c.MaxPendingPerToken < 0 {
		return fmt.Errorf("max_pending: the pending-session caps must not be negative")
	}
	if c.PendingTimeout < 0 {
		return fmt.Errorf("pending_timeout: must not be negative")
	}
	for i, s := range c.ICEServers {
		if len(s.URLs) == 0 {
			return fmt.Errorf("ice_servers.%d.urls: at least one stun:/turn: URL is required", i)
		}
		for _, u := range s.URLs {
			if !strings.HasPrefix(u, "stun:") && !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") {
				return fmt.Errorf("ice_servers.%d.urls: %q is not a stun, turn or turns URL", i, u)
			}
		}
	}
	return nil
}
