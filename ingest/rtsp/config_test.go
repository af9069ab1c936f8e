package rtsp

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		err  string // "" = valid
	}{
		{"default", func(*Config) {}, ""},
		{"tcp only ignores the udp ports", func(c *Config) { c.Transports, c.UDPRTPListen = []string{"tcp"}, "" }, ""},
		{"odd rtp port", func(c *Config) { c.UDPRTPListen, c.UDPRTCPListen = ":8001", ":8002" }, "must be even"},
		{"rtcp not next", func(c *Config) { c.UDPRTCPListen = ":8003" }, "RTP port + 1"},
		{"no port", func(c *Config) { c.UDPRTPListen = "localhost" }, "udp_rtp_listen"},
		{"bad transport", func(c *Config) { c.Transports = []string{"sctp"} }, "transports.0"},
		{"no transport", func(c *Config) { c.Transports = nil }, "at least one"},
		{"read timeout", func(c *Config) { c.ReadTimeout = -time.Second }, "read_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.edit(&c)
			err := c.Validate()
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("error %v, want %q", err, tc.err)
			}
		})
	}
}

// The backoff doubles from Initial to Max and jitter only shortens.
func TestBackoffDelay(t *testing.T) {
	b := DefaultBackoff()
	for _, tc := range []struct {
		attempt int
		want    time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {4, 8 * time.Second}, {5, 16 * time.Second}, {6, 30 * time.Second}, {50, 30 * time.Second}} {
		if got := b.Delay(tc.attempt, func() float64 { return 0 }); got != tc.want {
			t.Errorf("attempt %d: %v, want %v", tc.attempt, got, tc.want)
		}
		if got := b.Delay(tc.attempt, func() float64 { return 0.999999 }); got < tc.want*8/10 || got > tc.want {
			t.Errorf("attempt %d with jitter: %v", tc.attempt, got)
		}
	}
}
