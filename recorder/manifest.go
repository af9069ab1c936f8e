package recorder

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sluice-media/sluice/sfu"
)

// Recording statuses (the recording object's status).
const (
	StatusStarting = "starting"
	StatusActive   = "active"
	StatusPaused   = "paused"
	StatusEnding   = "ending"
	StatusComplete = "complete"
	StatusFailed   = "failed"
)

// ManifestName is the name of the manifest in each recording's directory.
const ManifestName = "recording.json"

// manifestVersion is the version of the manifest format.
const manifestVersion = 1

// Recording is a recording as the API and the manifest show it: the recording object of the
// events plus what the catalogue keeps about it. Values are snapshots.
type Recording struct {
	sfu.RecordingInfo
	// Track is the track scope: "", "audio", "video" or a track SID.
	Track string `json:"track,omitempty"`
	// Paused is true between pause and resume; Pauses lists every pause.
	Paused bool    `json:"paused"`
	Pauses []Pause `json:"pauses,omitempty"`
	// Segment and MaxDuration are the requested segment length and limit ("" when unset).
	Segment     string `json:"segment,omitempty"`
	MaxDuration string `json:"max_duration,omitempty"`
	// Auto names the auto-record rule (its room glob) that started the recording.
	Auto string `json:"auto,omitempty"`
	// Reason says why the recording ended.
	Reason string `json:"reason,omitempty"`
	// Storage names the object storage target the recording is uploaded to ("" keeps it local);
	// Upload is that upload's state.
	Storage string       `json:"storage,omitempty"`
	Upload  *UploadState `json:"upload,omitempty"`
	// Details are the per-file facts the recording object does not carry, in Files order.
	Details []FileDetail `json:"file_details,omitempty"`
	// Version is the manifest format version.
	Version int `json:"version"`
}

// Pause is one paused span; ResumedAt is nil while paused.
type Pause struct {
	PausedAt  time.Time  `json:"paused_at"`
	ResumedAt *time.Time `json:"resumed_at,omitempty"`
}

// FileDetail completes a RecordingFile.
type FileDetail struct {
	Name        string   `json:"name"`
	Participant string   `json:"participant"`
	Format      string   `json:"format"`
	Tracks      []string `json:"tracks,omitempty"`
	// Complete is true once the file was closed cleanly.
	Complete bool `json:"complete"`
	// Truncated is true when recovery cut an incomplete last fragment off the file.
	Truncated bool `json:"truncated,omitempty"`
	// ObjectKey and MD5 are set once the file is uploaded and verified.
	ObjectKey string `json:"object_key,omitempty"`
	MD5       string `json:"md5,omitempty"`
}

// clone returns a deep copy (slices are not shared).
func (r *Recording) clone() *Recording {
	c := *r
	c.Tracks = append([]string{}, r.Tracks...)
	c.Files = append([]sfu.RecordingFile{}, r.Files...)
	c.Pauses = append([]Pause(nil), r.Pauses...)
	c.Details = append([]FileDetail(nil), r.Details...)
	if r.Error != nil {
		e := *r.Error
		c.Error = &e
	}
	if r.Upload != nil {
		u := *r.Upload
		if u.Error != nil {
			e := *u.Error
			u.Error = &e
		}
		c.Upload = &u
	}
	return &c
}

// Info returns the recording object of the events.
func (r *Recording) Info() *sfu.RecordingInfo {
	c := r.clone()
	return &c.RecordingInfo
}

// pausedMs is the time spent paused up to now, an open pause included.
func (r *Recording) pausedMs(now time.Time) int64 {
	var d time.Duration
	for _, p := range r.Pauses {
		end := now
		if p.ResumedAt != nil {
			end = *p.ResumedAt
		}
		if end.After(p.PausedAt) {
			d += end.Sub(p.PausedAt)
		}
	}
	return d.Milliseconds()
}

// Terminal reports whether the recording has ended.
func (r *Recording) Terminal() bool {
	return r.Status == StatusComplete || r.Status == StatusFailed
}

// writeManifest replaces the manifest in dir atomically: a temporary file is written and
// synced, renamed over the manifest, and the directory is synced.
func writeManifest(dir string, r *Recording) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".recording-*.json")
	if err != nil {
		return err
	}
	name := tmp.Name()
	_, err = tmp.Write(append(data, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(name, filepath.Join(dir, ManifestName))
	}
	if err != nil {
		_ = os.Remove(name)
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// readManifest loads a manifest.
func readManifest(path string) (*Recording, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Recording
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if r.ID == "" || validID(r.ID) != nil {
		return nil, fmt.Errorf("%s: invalid recording id", path)
	}
	return &r, nil
}

// loadCatalogue reads every <root>/<room>/<id>/recording.json.
func loadCatalogue(root string) ([]*Recording, []error) {
	paths, err := filepath.Glob(filepath.Join(root, "*", "*", ManifestName))
	if err != nil {
		return nil, []error{err}
	}
	var out []*Recording
	var errs []error
	for _, p := range paths {
		r, err := readManifest(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, r)
	}
	return out, errs
}

// IDPrefix starts every recording id.
const IDPrefix = "RC_"

var errBadID = errors.New("not a recording id")

// validID checks an id from a URL or a manifest: the prefix and 16 base62 characters.
func validID(id string) error {
	if len(id) != len(IDPrefix)+16 || id[:len(IDPrefix)] != IDPrefix {
		return errBadID
	}
	for _, c := range id[len(IDPrefix):] {
		if (c < '0' || c > '9') && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') {
			return errBadID
		}
	}
	return nil
}
