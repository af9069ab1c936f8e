// Package rtmp serves RTMP and RTMPS publishers (OBS, encoders) and turns each session into a
// participant with H.264/H.265/AV1/VP9 and AAC tracks.
package rtmp

import (
	"fmt"
	"time"
)

// TLS names a certificate and key in PEM files.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Config is the `rtmp:` section.
type Config struct {
	Listen      string `yaml:"listen"`
	RTMPSListen string `yaml:"rtmps_listen"`
	// TLS enables RTMPS on RTMPSListen when both files are set.
	TLS TLS `yaml:"tls"`
	// ReadTimeout closes a session that sends no media for this long.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// MaxMessageSize bounds one RTMP message (a video frame); larger ones close the connection.
	MaxMessageSize int `yaml:"max_message_size"`
	// MaxConnsPerIP bounds concurrent connections from one address.
	MaxConnsPerIP int `yaml:"max_conns_per_ip"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{Listen: ":1935", RTMPSListen: ":1936", ReadTimeout: 10 * time.Second,
		MaxMessageSize: 8 << 20, MaxConnsPerIP: 16}
}

// Validate reports the first invalid value.
func (c Config) Validate() error {
	switch {
	case (c.TLS.CertFile == "") != (c.TLS.KeyFile == ""):
		return fmt.Errorf("tls: cert_file and key_file go together")
	case c.ReadTimeout <= 0:
		return fmt.Errorf("read_timeout: must be positive")
	case c.MaxMessageSize < 64<<10:
		return fmt.Errorf("max_message_size: must be at least 65536")
	case c.MaxConnsPerIP <= 0:
		return fmt.Errorf("max_conns_per_ip: must be positive")
	}
	return nil
}
