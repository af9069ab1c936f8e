// Package egress runs the workers that take media out of rooms (broadcasts to RTMP platforms,
// the ffmpeg transcoder) under a supervisor that owns their states, retries and events.
package egress

import (
	"fmt"
	"time"
)

// BroadcastConfig is the `broadcast:` section.
type BroadcastConfig struct {
	// Grace is how long a broadcast waits for its source participant to return.
	Grace time.Duration `yaml:"grace"`
	// MaxRetryDuration bounds reconnect attempts to a destination before broadcast.failed.
	MaxRetryDuration time.Duration `yaml:"max_retry_duration"`
}

// DefaultBroadcastConfig returns the documented defaults.
func DefaultBroadcastConfig() BroadcastConfig {
	return BroadcastConfig{Grace: 30 * time.Second, MaxRetryDuration: 5 * time.Minute}
}

// Validate reports the first invalid value.
func (c BroadcastConfig) Validate() error {
	if c.Grace < 0 {
		return fmt.Errorf("grace: must not be negative")
	}
	if c.MaxRetryDuration <= 0 {
		return fmt.Errorf("max_retry_duration: must be positive")
	}
	return nil
}

// TranscodeConfig is the `transcode:` section.
type TranscodeConfig struct {
	Enabled bool `yaml:"enabled"`
	// FFmpeg is the ffmpeg binary: a path, or a name looked up on PATH.
	FFmpeg string `yaml:"ffmpeg"`
}

// DefaultTranscodeConfig returns the documented defaults.
func DefaultTranscodeConfig() TranscodeConfig {
	return TranscodeConfig{Enabled: true, FFmpeg: "ffmpeg"}
}

// Validate reports the first invalid value.
func (c TranscodeConfig) Validate() error {
	if c.Enabled && c.FFmpeg == "" {
		return fmt.Errorf("ffmpeg: must name the ffmpeg binary when enabled")
	}
	return nil
}
