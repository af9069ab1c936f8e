// Package rtsp pulls IP cameras (with reconnects) and serves RTSP push (ANNOUNCE/RECORD) and
// play (DESCRIBE/PLAY), turning each session into a participant.
package rtsp

import (
	"fmt"
	"net"
	"slices"
	"strconv"
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
	if c.UDP() {
		rtp, err := listenPort(c.UDPRTPListen)
		if err != nil {
			return fmt.Errorf("udp_rtp_listen: %w", err)
		}
		rtcp, err := listenPort(c.UDPRTCPListen)
		if err != nil {
			return fmt.Errorf("udp_rtcp_listen: %w", err)
		}
		// RFC 3550 §11: RTP on an even port, RTCP on the next one.
		if rtp%2 != 0 {
			return fmt.Errorf("udp_rtp_listen: the RTP port must be even (RFC 3550 §11), not %d", rtp)
		}
		if rtcp != rtp+1 {
			return fmt.Errorf("udp_rtcp_listen: the RTCP port must be the RTP port + 1 (%d), not %d", rtp+1, rtcp)
		}
	}
	return nil
}

// UDP reports whether the server accepts the UDP transport.
func (c Config) UDP() bool { return slices.Contains(c.Transports, "udp") }

// TCP reports whether the server accepts the TCP (interleaved) transport.
func (c Config) TCP() bool { return slices.Contains(c.Transports, "tcp") }

func listenPort(addr string) (int, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("%q is not host:port", addr)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n <= 0 || n > 65535 {
		return 0, fmt.Errorf("%q has no valid port", addr)
	}
	return n, nil
}
