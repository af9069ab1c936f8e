package rtc

import (
	"fmt"
	"net"
	"strings"
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
}

// ICEServer is a STUN or TURN server for clients.
type ICEServer struct {
	URLs       []string `yaml:"urls"`
	Username   string   `yaml:"username"`
	Credential string   `yaml:"credential"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config { return Config{Port: 8900, ICETCP: true} }

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
