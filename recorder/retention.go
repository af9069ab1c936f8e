package recorder

import (
	"errors"
	"fmt"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-media/sluice/sfu"
)

// Reasons of recording.deleted.
const (
	ReasonRetentionAge  = "retention_age"
	ReasonRetentionSize = "retention_size"
	ReasonRetentionDisk = "retention_disk"
)

// RetentionConfig is `recording.retention`: limits that delete the oldest ended recordings'
// local files. A recording still recording, or waiting for its upload, is never deleted; an
// uploaded one loses only its local files and stays listed and playable from storage.
type RetentionConfig struct {
	// MaxAge deletes recordings ended longer ago than this (0: no limit).
	MaxAge time.Duration `yaml:"max_age"`
	// MaxBytes caps the recordings' total local size ("50GB", "2GiB"; "": no cap).
	MaxBytes string `yaml:"max_bytes"`
	// MinFree keeps at least this much free on the recordings disk ("10GB"; "": no floor).
	MinFree string `yaml:"min_free"`
	// Interval is how often the limits are checked.
	Interval time.Duration `yaml:"interval"`
	// Rooms are limits for the rooms matching a glob, checked apart from the global ones.
	Rooms []RoomRetention `yaml:"rooms"`
}

// RoomRetention limits the recordings of the rooms whose name matches Room.
type RoomRetention struct {
	Room     string        `yaml:"room"`
	MaxAge   time.Duration `yaml:"max_age"`
	MaxBytes string        `yaml:"max_bytes"`
}

// Validate reports the first invalid value.
func (c RetentionConfig) Validate() error {
	if c.MaxAge < 0 || c.Interval < 0 {
		return errors.New("max_age, interval: must not be negative")
	}
	if _, err := ParseSize(c.MaxBytes); err != nil {
		return fmt.Errorf("max_bytes: %w", err)
	}
	if _, err := ParseSize(c.MinFree); err != nil {
		return fmt.Errorf("min_free: %w", err)
	}
	for i, r := range c.Rooms {
		if _, err := path.Match(r.Room, ""); err != nil || r.Room == "" {
			return fmt.Errorf("rooms.%d.room: %q is not a glob", i, r.Room)
		}
		if _, err := ParseSize(r.MaxBytes); err != nil || r.MaxAge < 0 {
			return fmt.Errorf("rooms.%d: max_bytes is a size such as 10GB and max_age a positive duration", i)
		}
	}
	return nil
}

// enabled reports whether any limit is set.
func (c RetentionConfig) enabled() bool {
	return c.MaxAge > 0 || c.MaxBytes != "" || c.MinFree != "" || len(c.Rooms) > 0
}

// ParseSize reads a byte size: a whole number with an optional unit (B, KB, MB, GB, TB in
// powers of 1000, KiB, MiB, GiB, TiB in powers of 1024). "" is 0.
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	i := strings.IndexFunc(s, func(c rune) bool { return c < '0' || c > '9' })
	num, unit := s, ""
	if i >= 0 {
		num, unit = s[:i], strings.TrimSpace(s[i:])
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size such as 500MB or 2GiB", s)
	}
	mult := map[string]int64{"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
		"KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}[strings.ToUpper(unit)]
	if mult == 0 {
		return 0, fmt.Errorf("%q is not a size such as 500MB or 2GiB", s)
	}
	return n * mult, nil
}

// freeSpace returns the bytes available to us on the file system holding dir.
func freeSpace(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil //nolint:gosec,unconvert // block counts fit in int64
}

// hasLocal reports whether a recording still has media files on the recordings disk.
func hasLocal(m *Recording) bool { return m.Upload == nil || !m.Upload.LocalDeleted }

// deletable reports whether retention may delete a recording now.
func deletable(m *Recording) bool {
	return m.Terminal() && hasLocal(m) && (m.Upload == nil || m.Upload.Status != UploadPending)
}

// Sweep applies the retention limits once: by age, then by size (per room rule, then global),
// then by free disk, oldest recordings first. It returns how many recordings it deleted.
func (r *Recorder) Sweep() int {
	c := r.cfg.Retention
	now := r.clock()
	all := r.List("", "")
	sort.SliceStable(all, func(i, j int) bool { return startOf(all[i]).Before(startOf(all[j])) })
	gone := map[string]bool{}
	del := func(m *Recording, reason string) bool {
		if _, err := r.Delete(m.ID, reason); err != nil {
			r.log.Warn("retention could not delete a recording", "recording", m.ID, "err", err)
			return false
		}
		gone[m.ID] = true
		return true
	}
	maxAge := func(room string) time.Duration {
		for _, rr := range c.Rooms {
			if ok, _ := path.Match(rr.Room, room); ok && rr.MaxAge > 0 {
				return rr.MaxAge
			}
		}
		return c.MaxAge
	}
	for _, m := range all {
		if age := maxAge(m.Room); age > 0 && deletable(m) && m.EndedAt != nil && now.Sub(*m.EndedAt) > age {
			del(m, ReasonRetentionAge)
		}
	}
	bySize := func(match func(string) bool, limit int64) {
		var total int64
		for _, m := range all {
			if !gone[m.ID] && hasLocal(m) && match(m.Room) {
				total += m.SizeBytes
			}
		}
		for _, m := range all {
			if total <= limit {
				return
			}
			if !gone[m.ID] && deletable(m) && match(m.Room) && del(m, ReasonRetentionSize) {
				total -= m.SizeBytes
			}
		}
	}
	for _, rr := range c.Rooms {
		if limit, _ := ParseSize(rr.MaxBytes); limit > 0 {
			bySize(func(room string) bool { ok, _ := path.Match(rr.Room, room); return ok }, limit)
		}
	}
	if limit, _ := ParseSize(c.MaxBytes); limit > 0 {
		bySize(func(string) bool { return true }, limit)
	}
	if floor, _ := ParseSize(c.MinFree); floor > 0 {
		for _, m := range all {
			free, err := r.free(r.dir)
			if err != nil || free >= floor {
				break
			}
			if !gone[m.ID] && deletable(m) {
				del(m, ReasonRetentionDisk)
			}
		}
	}
	return len(gone)
}

// Delete removes a recording's local files (reason requested or a retention reason) and reports
// it (recording.deleted). An uploaded recording keeps its manifest and objects, so it stays
// listed and playable from storage; any other is gone from the catalogue.
func (r *Recorder) Delete(id, reason string) (*Recording, error) {
	e, err := r.lookup(id)
	if err != nil {
		return nil, err
	}
	if e.rec != nil {
		return nil, fmt.Errorf("%w: the recording is still running; stop it first", ErrConflict)
	}
	m, ok := r.claim(id)
	if !ok {
		return nil, fmt.Errorf("%w: the recording is being uploaded or deleted", ErrConflict)
	}
	dir := absDir(r.dir, recordingDir(m.Room, m.ID))
	if m.Upload != nil && m.Upload.Status == UploadComplete {
		r.removeLocalMedia(m, dir)
		r.save(m)
		r.release(id, m)
	} else {
		if err := os.RemoveAll(dir); err != nil {
			r.release(id, m)
			return nil, errors.New(pathless(err))
		}
		r.release(id, nil)
	}
	r.log.Info("recording deleted", "recording", id, "reason", reason, "kept_remotely", m.Upload != nil && m.Upload.Status == UploadComplete)
	r.emit.Emit(&sfu.Event{Type: sfu.EventRecordingDeleted, Room: r.roomInfo(m.Room), Recording: m.Info(), Reason: reason})
	return m, nil
}
