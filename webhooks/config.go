// Package webhooks holds the durable event log, webhook delivery (signing, ordering, retries,
// replay) and the status stream that `sluice status -f` follows.
package webhooks

import (
	"fmt"
	"time"

	"github.com/sluice-media/sluice/sfu"
)

// EventsConfig is the `events:` section.
type EventsConfig struct {
	// Retention is how long events are kept in the log.
	Retention time.Duration `yaml:"retention"`
	// NATSURL points at an external NATS cluster; "" embeds a JetStream server in the daemon.
	NATSURL string `yaml:"nats_url"`
	// StatsInterval is the period of stream.stats events.
	StatsInterval time.Duration `yaml:"stats_interval"`
	// FollowerTimeout cuts off a status-stream follower (GET /v1/events?follow=1) whose writes
	// have not gone through for this long: it stopped reading.
	FollowerTimeout time.Duration `yaml:"follower_timeout"`
	// QueueSize bounds the events waiting for the log, all rooms together; past it new events
	// are dropped, counted and logged (sfu.QueueOptions.Buffer).
	QueueSize int `yaml:"queue_size"`
	// AckWait bounds how long an acknowledged change waits for its events to be stored
	// (sfu.QueueOptions.AckWait).
	AckWait time.Duration `yaml:"ack_wait"`
	// FlushTimeout bounds how long shutdown waits for the log to take the queued events.
	FlushTimeout time.Duration `yaml:"flush_timeout"`
}

// DefaultFollowerTimeout is the default of EventsConfig.FollowerTimeout.
const DefaultFollowerTimeout = 10 * time.Second

// DefaultEventsConfig returns the documented defaults.
func DefaultEventsConfig() EventsConfig {
	return EventsConfig{Retention: 168 * time.Hour, StatsInterval: 10 * time.Second, FollowerTimeout: DefaultFollowerTimeout,
		QueueSize: sfu.DefaultEventBuffer, AckWait: sfu.DefaultEventAckWait, FlushTimeout: 5 * time.Second}
}

// Validate reports the first invalid value.
func (c EventsConfig) Validate() error {
	if c.Retention < time.Minute {
		return fmt.Errorf("retention: must be at least 1m")
	}
	if c.StatsInterval < 0 {
		return fmt.Errorf("stats_interval: must not be negative")
	}
	if c.FollowerTimeout < time.Second {
		return fmt.Errorf("follower_timeout: must be at least 1s")
	}
	if c.QueueSize < 1 || c.QueueSize > 10_000_000 {
		return fmt.Errorf("queue_size: must be 1 to 10000000")
	}
	if c.AckWait <= 0 || c.AckWait > 10*time.Second {
		return fmt.Errorf("ack_wait: must be more than 0 and at most 10s")
	}
	if c.FlushTimeout <= 0 || c.FlushTimeout > 10*time.Minute {
		return fmt.Errorf("flush_timeout: must be more than 0 and at most 10m")
	}
	return nil
}

// Config is the `webhooks:` section.
type Config struct {
	Endpoints []EndpointConfig `yaml:"endpoints"`
	// Timeout bounds one delivery attempt.
	Timeout time.Duration `yaml:"timeout"`
	// MaxAge is how long an undelivered event is retried before it is kept as failed.
	MaxAge time.Duration `yaml:"max_age"`
	// RetrySchedule are the waits before the second, third… attempt of a delivery (the first
	// is at once); the last wait repeats until MaxAge.
	RetrySchedule []time.Duration `yaml:"retry_schedule"`
}

// EndpointConfig is one webhook endpoint of the config file.
type EndpointConfig struct {
	ID  string `yaml:"id"`
	URL string `yaml:"url"`
	// Secret is "whsec_<base64>"; when empty one is generated, kept in the event store and shown
	// by `sluice webhooks secret ID` (never logged).
	Secret string `yaml:"secret"`
	// Events are type globs ("recording.*"); empty means every type but stream.stats.
	Events []string `yaml:"events"`
	// Rooms are room-name globs; empty means every room.
	Rooms []string `yaml:"rooms"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{Timeout: 10 * time.Second, MaxAge: 72 * time.Hour, RetrySchedule: DefaultRetrySchedule()}
}

// DefaultRetrySchedule is shared/DESIGN.md's backoff: at once, 5 s, 30 s, 2 m, 10 m, 30 m, 1 h,
// then every 2 h; with one quick retry after 500 ms first, so that a receiver restarting
// together with the daemon (or a connection that broke) does not hold an event for 5 s.
func DefaultRetrySchedule() []time.Duration {
	return []time.Duration{500 * time.Millisecond, 5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour}
}

// Validate reports the first invalid value.
func (c Config) Validate() error {
	if c.Timeout <= 0 {
		return fmt.Errorf("timeout: must be positive")
	}
	if c.MaxAge <= 0 {
		return fmt.Errorf("max_age: must be positive")
	}
	if len(c.RetrySchedule) == 0 {
		return fmt.Errorf("retry_schedule: needs at least one wait")
	}
	for i, d := range c.RetrySchedule {
		if d <= 0 {
			return fmt.Errorf("retry_schedule.%d: must be positive", i)
		}
	}
	ids := map[string]bool{}
	for i, e := range c.Endpoints {
		id := e.ID
		if id == "" {
			id = configEndpointID(e.URL)
		}
		if ids[id] {
			return fmt.Errorf("endpoints.%d.id: %q is used twice", i, id)
		}
		ids[id] = true
		ep := Endpoint{ID: id, URL: e.URL, Secret: e.Secret, Events: e.Events, Rooms: e.Rooms}
		if err := validateEndpoint(&ep); err != nil {
			return fmt.Errorf("endpoints.%d: %w", i, err)
		}
	}
	return nil
}
