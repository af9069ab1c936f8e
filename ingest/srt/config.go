// Package srt serves SRT (Secure Reliable Transport) publishers and readers on one UDP port:
// a publisher sends MPEG-TS (H.264, H.265, AAC, Opus) that becomes a participant of its room; a
// reader gets the MPEG-TS of a room's main publisher or of one participant. The stream id names
// the room, the identity and the mode; the key and token rules are ingest.Keys'.
package srt

import (
	"fmt"
	"net"
	"time"
)

// Config is the `srt:` section.
type Config struct {
	// Listen is the UDP address of the SRT port; empty disables SRT.
	Listen string `yaml:"listen"`
	// Latency is the SRT receive buffer (TSBPD delay), the time a lost packet has to be resent:
	// about four round trips on a lossy link.
	Latency time.Duration `yaml:"latency"`
	// Passphrase, when set, is required (AES) of connections that are not those of an srt
	// ingest with its own passphrase. 10 to 79 characters.
	Passphrase string `yaml:"passphrase"`
	// ReadTimeout ends a connection that sends no MPEG-TS for this long.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// MaxConnsPerIP bounds concurrent connections from one address.
	MaxConnsPerIP int `yaml:"max_conns_per_ip"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{Listen: ":8890", Latency: 200 * time.Millisecond, ReadTimeout: 10 * time.Second, MaxConnsPerIP: 16}
}

// Validate reports the first invalid value.
func (c Config) Validate() error {
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
	}
	switch n := len(c.Passphrase); {
	case c.Latency < 20*time.Millisecond || c.Latency > 10*time.Second:
		return fmt.Errorf("latency: must be between 20ms and 10s")
	case n != 0 && (n < 10 || n > 79):
		return fmt.Errorf("passphrase: SRT takes 10 to 79 characters")
	case c.ReadTimeout <= 0:
		return fmt.Errorf("read_timeout: must be positive")
	case c.MaxConnsPerIP <= 0:
		return fmt.Errorf("max_conns_per_ip: must be positive")
	}
	return nil
}
