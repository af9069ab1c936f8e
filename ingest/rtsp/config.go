// Package rtsp pulls IP cameras (with reconnects) and serves RTSP push (ANNOUNCE/RECORD) and
// play (DESCRIBE/PLAY), turning each session into a participant.
package rtsp

import (
	"fmt"
	"time"
)

// Config is the `rtsp:` section.
type Config struct {
	Listen string `yaml:"listen"`
	// Transports the server accepts: udp, tcp.
	Transports []string `yaml:"transports"`
	// UDPRTPListen and UDPRTCPListen are the server's RTP/RTCP port pair for UDP transport.
	UDPRTPListen  string `yaml:"udp_rtp_listen"`
	UDPRTCPListen string `yaml:"udp_rtcp_listen"`
	// ReadTimeout ends a session (push, play, or a camera pull) that sends nothing for this long.
	ReadTimeout time.Duration `yaml:"read_timeout"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{Listen: ":8554", Transports: []string{"udp", "tcp"}, UDPRTPListen: ":8000",
		UDPRTCPListen: ":8001", ReadTimeout: 10 * time.Second}
}

// Validate reports the first invalid value.
func (c Config) Validate() error {
	if len(c.Transports) == 0 {
		return fmt.Errorf("transports: at least one of udp, tcp")
	}
	for i, t := range c.Transports {
		if t != "udp" && t != "tcp" {
			return fmt.Errorf("transports.%d: %q is not udp or tcp", i, t)
		}
	}
	if c.ReadTimeout <= 0 {
		return fmt.Errorf("read_timeout: must be positive")
	}
	return nil
}
