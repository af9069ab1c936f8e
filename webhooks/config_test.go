package webhooks

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	ok := EndpointConfig{URL: "https://example.com/hooks"}
	for _, c := range []struct {
		name string
		mod  func(*Config)
		err  string
	}{
		{"default", func(*Config) {}, ""},
		{"endpoint", func(c *Config) { c.Endpoints = []EndpointConfig{ok} }, ""},
		{"no schedule", func(c *Config) { c.RetrySchedule = nil }, "retry_schedule"},
		{"zero wait", func(c *Config) { c.RetrySchedule = []time.Duration{time.Second, 0} }, "retry_schedule.1"},
		{"metadata target", func(c *Config) { c.Endpoints = []EndpointConfig{{URL: "http://169.254.169.254/latest"}} }, "link-local or metadata"},
		{"ipv6 metadata target", func(c *Config) { c.Endpoints = []EndpointConfig{{URL: "http://[fd00:ec2::254]/"}} }, "link-local or metadata"},
		{"bad secret", func(c *Config) { c.Endpoints = []EndpointConfig{{URL: ok.URL, Secret: "hunter2"}} }, "whsec_"},
		{"bad id", func(c *Config) { c.Endpoints = []EndpointConfig{{URL: ok.URL, ID: "a.b"}} }, "id"},
		{"same id twice", func(c *Config) { c.Endpoints = []EndpointConfig{ok, ok} }, "used twice"},
		{"bad glob", func(c *Config) { c.Endpoints = []EndpointConfig{{URL: ok.URL, Events: []string{"["}}} }, "not a glob"},
		{"not http", func(c *Config) { c.Endpoints = []EndpointConfig{{URL: "ftp://example.com"}} }, "http://"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			c.mod(&cfg)
			err := cfg.Validate()
			if (err == nil) != (c.err == "") || (err != nil && !strings.Contains(err.Error(), c.err)) {
				t.Fatalf("Validate: %v, want %q", err, c.err)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Fatal("the error shows the secret")
			}
		})
	}
}
