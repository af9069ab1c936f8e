package recorder

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-media/sluice/sfu"
)

// File is a media file being written. *os.File implements it.
type File interface {
	Write(p []byte) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Truncate(size int64) error
	Sync() error
	Close() error
}

// FS creates media files; tests inject one that fails like a full disk.
type FS interface {
	// Create makes a new file (it must not exist) with its directory.
	Create(path string) (File, error)
}

// OSFS is the operating system's file system.
type OSFS struct{}

// Create makes the directory and a new file.
func (OSFS) Create(path string) (File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640) //nolint:gosec // group-readable for players and backups
}

// Error codes of recording.failed.
const (
	CodeDiskFull    = "disk_full"
	CodeWriteFailed = "write_failed"
	CodeSourceLost  = "source_lost"
	CodeInternal    = "internal"
)

// fileError classifies a file system error for the recording's error object.
func fileError(err error) *sfu.ErrorInfo {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return &sfu.ErrorInfo{Code: CodeDiskFull, Message: "no space left on the recordings disk: " + pathless(err)}
	}
	return &sfu.ErrorInfo{Code: CodeWriteFailed, Message: "writing the recording failed: " + pathless(err)}
}

// pathless returns an error's message without the absolute path of a *PathError.
func pathless(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Op + " " + filepath.Base(pe.Path) + ": " + pe.Err.Error()
	}
	return err.Error()
}

// segmentFile is one file of a capture: a container over a File, with its tracks. Owned by the
// capture goroutine.
type segmentFile struct {
	file      File
	rel       string // path relative to the recordings directory
	format    string
	cont      container
	tracks    []*fileTrack
	size      int64
	startedAt time.Time
	broken    bool // a write failed: nothing more is written
}

// sanitize turns a room name or identity into a safe file name part: A-Z a-z 0-9 - _ . @ only,
// never starting with a dot, at most 64 bytes.
func sanitize(s string) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < 64; i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '@':
			b.WriteByte(c)
		case c == '.' && b.Len() > 0:
			b.WriteByte(c)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "_"
	}
	return b.String()
}

// write appends b to the file; on error the file is cut back to its last complete fragment.
func (s *segmentFile) write(b []byte) error {
	if s.broken {
		return errors.New("file already failed")
	}
	n, err := s.file.Write(b)
	if err == nil && n != len(b) {
		err = fmt.Errorf("short write: %d of %d bytes", n, len(b))
	}
	if err == nil {
		err = s.file.Sync()
	}
	if err != nil {
		s.broken = true
		_ = s.file.Truncate(s.size) // keep the file playable up to its last fragment
		return err
	}
	s.size += int64(n)
	return nil
}

// flush writes every track's pending samples as one fragment. Unless final, each track keeps
// its last sample, whose duration is known only when the next one arrives.
func (s *segmentFile) flush(final bool, nominal func(i int) int64) error {
	type held struct {
		smp  sample
		data []byte
	}
	var keep [8]held
	var kept [8]bool
	if len(s.tracks) > len(keep) {
		return errors.New("too many tracks in one file")
	}
	anySamples := false
	for i, t := range s.tracks {
		if len(t.samples) == 0 {
			continue
		}
		last := &t.samples[len(t.samples)-1]
		if final {
			if last.dur == 0 {
				last.dur = uint32(nominal(i))
				if len(t.samples) > 1 {
					last.dur = t.samples[len(t.samples)-2].dur
				}
			}
		} else {
			start := len(t.data) - last.n
			keep[i] = held{smp: *last, data: t.data[start:]}
			kept[i] = true
			t.samples = t.samples[:len(t.samples)-1]
			t.data = t.data[:start]
		}
		if len(t.samples) > 0 {
			anySamples = true
		}
	}
	var err error
	if anySamples {
		var b []byte
		b, err = s.cont.fragment(s.tracks)
		if err == nil && len(b) > 0 {
			err = s.write(b)
		}
	}
	for i, t := range s.tracks {
		if n := len(t.samples); n > 0 {
			l := t.samples[n-1]
			t.end = l.dts + int64(l.dur)
		}
		t.samples = t.samples[:0]
		if kept[i] {
			// The held payload sits right after the written ones: move it to the front.
			h := keep[i]
			t.data = append(t.data[:0], t.data[len(t.data):len(t.data)+len(h.data)]...)
			h.smp.n = len(t.data)
			t.samples = append(t.samples, h.smp)
		} else {
			t.data = t.data[:0]
		}
	}
	return err
}

// durationMs is the length of the file: the end of its longest track.
func (s *segmentFile) durationMs() int64 {
	var ms int64
	for _, t := range s.tracks {
		end := t.end
		if n := len(t.samples); n > 0 {
			end = max(end, t.samples[n-1].dts+int64(t.samples[n-1].dur))
		}
		ms = max(ms, end*1000/int64(t.clock))
	}
	return ms
}

// close writes the last samples and the container's trailer, and closes the file.
func (s *segmentFile) close(nominal func(i int) int64) error {
	var err error
	if !s.broken {
		err = s.flush(true, nominal)
	}
	if err == nil && !s.broken {
		for _, p := range s.cont.trailer(s.tracks, s.durationMs(), s.size) {
			if _, werr := s.file.WriteAt(p.data, p.off); werr != nil {
				err = werr
				break
			}
		}
		if err == nil {
			err = s.file.Sync()
		}
	}
	if cerr := s.file.Close(); err == nil {
		err = cerr
	}
	return err
}

// info returns the file's catalogue entry.
func (s *segmentFile) info() sfu.RecordingFile {
	return sfu.RecordingFile{Path: s.rel, SizeBytes: s.size, DurationMs: s.durationMs(), StartedAt: s.startedAt.UTC()}
}
