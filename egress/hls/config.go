// Package hls serves rooms as Low-Latency HLS (fMP4 parts, gohlslib's muxer) on the HTTP port:
// /hls/<room>/index.m3u8 plays the room's main publisher, /hls/<room>/<identity>/index.m3u8 one
// participant. A muxer starts at the first request for its stream, reads the source through an
// sfu.Follower like RTSP play and WHEP do, and stops when no request came for idle_timeout.
package hls

import (
	"errors"
	"time"
)

// Config is the `hls:` section.
type Config struct {
	// Enabled serves /hls/ on the HTTP port.
	Enabled bool `yaml:"enabled"`
	// PartDuration is the minimum duration of an LL-HLS part (what a low-latency player
	// fetches); the muxer adjusts it to the frame durations.
	PartDuration time.Duration `yaml:"part_duration"`
	// SegmentDuration is the minimum duration of a segment; a segment also ends only at a
	// keyframe, so the source's keyframe interval bounds it from below.
	SegmentDuration time.Duration `yaml:"segment_duration"`
	// SegmentCount is how many segments the playlist lists (at least 7 for LL-HLS).
	SegmentCount int `yaml:"segment_count"`
	// IdleTimeout stops a muxer that no request came for in this long.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{Enabled: true, PartDuration: 200 * time.Millisecond, SegmentDuration: time.Second, SegmentCount: 7, IdleTimeout: 30 * time.Second}
}

// Validate reports the first invalid value.
func (c Config) Validate() error {
	switch {
	case c.PartDuration < 50*time.Millisecond || c.PartDuration > 5*time.Second:
		return errors.New("part_duration: must be between 50ms and 5s")
	case c.SegmentDuration < c.PartDuration || c.SegmentDuration > time.Minute:
		return errors.New("segment_duration: must be between part_duration and 1m")
	case c.SegmentCount < 7 || c.SegmentCount > 100:
		return errors.New("segment_count: LL-HLS needs 7 to 100")
	case c.IdleTimeout < time.Second:
		return errors.New("idle_timeout: must be at least 1s")
	}
	return nil
}
