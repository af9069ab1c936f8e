// Package recorder writes recordings of rooms, participants and tracks as crash-safe fragmented
// MP4 and keeps their catalogue in per-recording manifests.
package recorder

import (
	"errors"
	"fmt"
	"path"
	"time"

	"github.com/sluice-media/sluice/egress/composite"
)

// Config is the `recording:` section.
type Config struct {
	// Dir holds recordings; "" means <data_dir>/recordings.
	Dir              string        `yaml:"dir"`
	Format           string        `yaml:"format"`
	FragmentDuration time.Duration `yaml:"fragment_duration"`
	SegmentDuration  time.Duration `yaml:"segment_duration"`
	// Grace is how long a recording waits for its source to come back.
	Grace time.Duration `yaml:"grace"`
	// Auto starts recordings by rule when a matching room gets a publisher.
	Auto []AutoRule `yaml:"auto"`
	// MinFreeMB is the space (MiB) recordings leave free on their disk: a recording that would
	// take it fails with disk_full, so that the event log beside it can still store the event.
	MinFreeMB int64 `yaml:"min_free_mb"`
	// Storage names the storage target recordings are uploaded to when neither the request nor
	// the auto rule names one ("" keeps them local).
	Storage string `yaml:"storage"`
	// Retention deletes old recordings.
	Retention RetentionConfig `yaml:"retention"`
}

// AutoRule records every room whose name matches Room (a glob).
type AutoRule struct {
	Room            string        `yaml:"room"`
	Participant     string        `yaml:"participant"`
	Format          string        `yaml:"format"`
	SegmentDuration time.Duration `yaml:"segment"`
	// Layout, when set, records each matching room composed (grid, speaker, single) in one
	// file, instead of one file per participant.
	Layout string `yaml:"layout"`
	// Storage names the storage target for this rule's recordings ("": recording.storage).
	Storage string `yaml:"storage"`
}

// checkTargets reports a storage target named in the config but not defined.
func checkTargets(c Config, stores map[string]*store) error {
	if c.Storage != "" && c.Storage != StorageLocal && stores[c.Storage] == nil {
		return fmt.Errorf("recording.storage: no target named %q in storage.targets", c.Storage)
	}
	for i, r := range c.Auto {
		if r.Storage != "" && r.Storage != StorageLocal && stores[r.Storage] == nil {
			return fmt.Errorf("recording.auto.%d.storage: no target named %q in storage.targets", i, r.Storage)
		}
	}
	return nil
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{Format: "mp4", FragmentDuration: 2 * time.Second, SegmentDuration: time.Hour, Grace: 30 * time.Second, MinFreeMB: 64,
		Retention: RetentionConfig{Interval: time.Minute, Rooms: []RoomRetention{}}}
}

// Validate reports the first invalid value.
func (c Config) Validate() error {
	if err := validFormat(c.Format); err != nil {
		return fmt.Errorf("format: %w", err)
	}
	switch {
	case c.FragmentDuration < 100*time.Millisecond:
		return fmt.Errorf("fragment_duration: must be at least 100ms")
	case c.SegmentDuration < c.FragmentDuration:
		return fmt.Errorf("segment_duration: must not be shorter than fragment_duration")
	case c.Grace < 0:
		return fmt.Errorf("grace: must not be negative")
	case c.MinFreeMB < 0:
		return fmt.Errorf("min_free_mb: must not be negative")
	}
	if err := c.Retention.Validate(); err != nil {
		return fmt.Errorf("retention.%w", err)
	}
	if c.Retention.enabled() && c.Retention.Interval <= 0 {
		return errors.New("retention.interval: must be positive")
	}
	for i, r := range c.Auto {
		if _, err := path.Match(r.Room, ""); err != nil || r.Room == "" {
			return fmt.Errorf("auto.%d.room: %q is not a glob", i, r.Room)
		}
		if r.Format != "" {
			if err := validFormat(r.Format); err != nil {
				return fmt.Errorf("auto.%d.format: %w", i, err)
			}
		}
		if r.Layout != "" {
			if err := composite.ValidLayout(r.Layout); err != nil {
				return fmt.Errorf("auto.%d.layout: %w", i, err)
			}
			if r.Participant != "" {
				return fmt.Errorf("auto.%d: a layout records the whole room; participant does not apply", i)
			}
		}
	}
	return nil
}

func validFormat(f string) error {
	if f != "mp4" && f != "mkv" {
		return fmt.Errorf("%q is not mp4 or mkv", f)
	}
	return nil
}
