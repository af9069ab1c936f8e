package recorder

import (
	"bytes"
	"context"
	"crypto/md5" //nolint:gosec // S3's Content-MD5 and ETag are MD5: an integrity check, not security
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/sluice-media/sluice/sfu"
)

// Upload statuses (UploadState.Status).
const (
	UploadPending  = "pending"
	UploadComplete = "complete"
	UploadFailed   = "failed"
)

// CodeUploadFailed is the error code of a recording whose upload failed for good.
const CodeUploadFailed = "upload_failed"

// UploadState is a recording's upload to object storage, kept in its manifest so that an
// upload cut off by a crash resumes where it stopped. A file is done once its RecordingFile has
// UploadedAt; the manifest goes last.
type UploadState struct {
	// Target names the storage target.
	Target string `json:"target"`
	// Status is pending, complete or failed.
	Status   string `json:"status"`
	Attempts int    `json:"attempts"`
	// ManifestKey is the manifest's object key once uploaded.
	ManifestKey string         `json:"manifest_key,omitempty"`
	CompletedAt *time.Time     `json:"completed_at,omitempty"`
	Error       *sfu.ErrorInfo `json:"error,omitempty"`
	// LocalDeleted is true once the local media files were removed (delete_local or retention).
	LocalDeleted bool `json:"local_deleted,omitempty"`
}

// permanentError is an upload error that retrying cannot fix (credentials, bucket, a file gone).
type permanentError struct{ msg string }

func (e *permanentError) Error() string { return e.msg }

func permanent(format string, args ...any) error {
	return &permanentError{msg: fmt.Sprintf(format, args...)}
}

// queueUpload schedules a terminal recording's upload.
func (r *Recorder) queueUpload(id string) {
	r.mu.Lock()
	r.uploadQ = append(r.uploadQ, id)
	r.mu.Unlock()
	select {
	case r.uploadWake <- struct{}{}:
	default:
	}
}

// runUploads uploads queued recordings one at a time until ctx ends; an upload cut off by the
// end stays pending in its manifest and resumes at the next start.
func (r *Recorder) runUploads(ctx context.Context) {
	for {
		r.mu.Lock()
		var id string
		if len(r.uploadQ) > 0 {
			id, r.uploadQ = r.uploadQ[0], r.uploadQ[1:]
		}
		r.mu.Unlock()
		if id == "" {
			select {
			case <-ctx.Done():
				return
			case <-r.uploadWake:
			}
			continue
		}
		r.upload(ctx, id)
		if ctx.Err() != nil {
			return
		}
	}
}

// claim marks an ended recording busy (uploading or being deleted) and returns a copy of it to
// work on; ok is false for a live, busy or unknown recording.
func (r *Recorder) claim(id string) (*Recording, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.recs[id]
	if e == nil || e.final == nil || e.busy {
		return nil, false
	}
	r.recs[id] = &entry{final: e.final, busy: true}
	return e.final.clone(), true
}

// release ends a claim; m (nil when the recording is gone) becomes the catalogue's copy.
func (r *Recorder) release(id string, m *Recording) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m == nil {
		delete(r.recs, id)
		return
	}
	if r.recs[id] != nil {
		r.recs[id] = &entry{final: m.clone()} // entries are replaced, never changed: readers hold them unlocked
	}
}

// save writes a claimed recording's manifest and shows it to readers.
func (r *Recorder) save(m *Recording) {
	r.mu.Lock()
	if e := r.recs[m.ID]; e != nil {
		r.recs[m.ID] = &entry{final: m.clone(), busy: e.busy}
	}
	r.mu.Unlock()
	if err := writeManifest(absDir(r.dir, recordingDir(m.Room, m.ID)), m); err != nil {
		r.log.Warn("writing the manifest", "recording", m.ID, "err", pathless(err))
	}
}

// emitUpdated reports an ended recording's change (recording.updated).
func (r *Recorder) emitUpdated(m *Recording, reason string, errInfo *sfu.ErrorInfo) {
	r.emit.Emit(&sfu.Event{Type: sfu.EventRecordingUpdated, Room: r.roomInfo(m.Room), Recording: m.Info(), Reason: reason, Error: errInfo})
}

// upload sends every file not yet uploaded, then the manifest, verifying each object's MD5, and
// removes the local media files when the target says so.
func (r *Recorder) upload(ctx context.Context, id string) {
	e, err := r.lookup(id)
	if err != nil {
		return
	}
	if e.rec != nil {
		r.uploadLive(ctx, e.rec)
		return
	}
	m, ok := r.claim(id)
	if !ok {
		return
	}
	defer func() { r.release(id, m) }()
	u := m.Upload
	if u == nil || u.Status == UploadFailed || (u.Status == UploadComplete && (u.LocalDeleted || !r.deletesLocal(u.Target))) {
		return
	}
	st := r.stores[u.Target]
	log := r.log.With("recording", id, "target", u.Target)
	if st == nil {
		r.uploadFailed(m, fmt.Errorf("storage target %q is not configured", u.Target))
		return
	}
	dir := absDir(r.dir, recordingDir(m.Room, m.ID))
	for len(m.Details) < len(m.Files) {
		m.Details = append(m.Details, FileDetail{Name: filepath.Base(m.Files[len(m.Details)].Path)})
	}
	for i := range m.Files {
		if m.Files[i].UploadedAt != nil || u.Status == UploadComplete {
			continue
		}
		key := st.key(m.Files[i].Path)
		var sum string
		err := r.retry(ctx, m, func() error {
			var err error
			sum, err = st.putFile(ctx, filepath.Join(dir, m.Details[i].Name), key)
			return err
		})
		if ctx.Err() != nil {
			return // shutting down: resumes at the next start
		}
		if err != nil {
			r.uploadFailed(m, fmt.Errorf("uploading %s to storage target %s: %w", m.Details[i].Name, u.Target, err))
			return
		}
		now := r.clock().UTC()
		m.Files[i].Location, m.Files[i].UploadedAt = st.location(key), &now
		m.Details[i].ObjectKey, m.Details[i].MD5 = key, sum
		r.save(m)
		r.emitUpdated(m, "", nil)
		log.Info("recording file uploaded", "file", m.Details[i].Name, "size", m.Files[i].SizeBytes)
	}
	if u.Status != UploadComplete {
		done := m.clone()
		now := r.clock().UTC()
		done.Upload.Status, done.Upload.CompletedAt, done.Upload.Error = UploadComplete, &now, nil
		done.Upload.ManifestKey = st.key(recordingDir(m.Room, m.ID) + "/" + ManifestName)
		data, err := json.MarshalIndent(done, "", "  ")
		if err == nil {
			err = r.retry(ctx, m, func() error { return st.putBytes(ctx, done.Upload.ManifestKey, data) })
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.uploadFailed(m, fmt.Errorf("uploading the manifest to storage target %s: %w", u.Target, err))
			return
		}
		done.Upload.Attempts = m.Upload.Attempts
		m, u = done, done.Upload
		r.save(m)
		r.emitUpdated(m, "", nil)
		log.Info("recording uploaded", "files", len(m.Files))
	}
	if st.t.DeleteLocal && !u.LocalDeleted {
		r.removeLocalMedia(m, dir)
		r.save(m)
		r.emitUpdated(m, "", nil)
	}
}

// uploadLive uploads the completed segments of a running recording; the recording's goroutine
// records each result in its manifest. The manifest goes when the recording has ended, and a
// segment whose result arrives after the end is uploaded again by that final pass.
func (r *Recorder) uploadLive(ctx context.Context, rec *recording) {
	m := rec.snapshot()
	st := r.stores[m.Storage]
	if st == nil || m.Upload == nil {
		return
	}
	for i := range m.Files {
		if i >= len(m.Details) || !m.Details[i].Complete || m.Files[i].UploadedAt != nil {
			continue
		}
		key := st.key(m.Files[i].Path)
		var sum string
		err := r.retry(ctx, m, func() error {
			var err error
			sum, err = st.putFile(ctx, filepath.Join(rec.dir, m.Details[i].Name), key)
			return err
		})
		if err != nil {
			return // the final pass retries it and reports a failure
		}
		now, loc, path := r.clock().UTC(), st.location(key), m.Files[i].Path
		err = rec.sendCmd(ctx, command{kind: cmdApply, reply: make(chan error, 1), apply: func(cur *Recording) {
			for j := range cur.Files {
				if cur.Files[j].Path == path && j < len(cur.Details) {
					cur.Files[j].Location, cur.Files[j].UploadedAt = loc, &now
					cur.Details[j].ObjectKey, cur.Details[j].MD5 = key, sum
				}
			}
		}})
		if err != nil {
			return
		}
		r.log.Info("recording segment uploaded", "recording", m.ID, "file", m.Details[i].Name)
	}
}

func (r *Recorder) deletesLocal(target string) bool {
	st := r.stores[target]
	return st != nil && st.t.DeleteLocal
}

// removeLocalMedia deletes a recording's media files, keeping its manifest.
func (r *Recorder) removeLocalMedia(m *Recording, dir string) {
	for _, d := range m.Details {
		if err := os.Remove(filepath.Join(dir, d.Name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			r.log.Warn("removing an uploaded file", "recording", m.ID, "err", pathless(err))
		}
	}
	if m.Upload != nil {
		m.Upload.LocalDeleted = true
	}
}

func (r *Recorder) uploadFailed(m *Recording, err error) {
	m.Upload.Status = UploadFailed
	m.Upload.Error = &sfu.ErrorInfo{Code: CodeUploadFailed, Message: err.Error() + "; the local files are kept"}
	r.save(m)
	r.emitUpdated(m, sfu.ReasonError, m.Upload.Error)
	r.log.Warn("recording upload failed", "recording", m.ID, "target", m.Upload.Target, "err", err)
}

// retry runs fn until it succeeds, fails permanently, the attempts run out or ctx ends,
// waiting with doubling backoff and jitter between attempts.
func (r *Recorder) retry(ctx context.Context, m *Recording, fn func() error) error {
	wait := r.storage.MinBackoff
	var err error
	for attempt := 1; ; attempt++ {
		m.Upload.Attempts++
		if err = fn(); err == nil || errors.As(err, new(*permanentError)) || ctx.Err() != nil || attempt >= r.storage.MaxAttempts {
			return err
		}
		r.log.Warn("upload attempt failed, retrying", "recording", m.ID, "attempt", attempt, "wait", wait, "err", err)
		jitter := time.Duration(float64(wait) * (0.8 + 0.4*rand.Float64())) //nolint:gosec // jitter needs no crypto
		t := time.NewTimer(jitter)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(wait*2, r.storage.MaxBackoff)
	}
}

// s3Error words a minio error without request details, and marks those retrying cannot fix.
func s3Error(err error) error {
	resp := minio.ToErrorResponse(err)
	switch resp.Code {
	case "":
		return err
	case "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "NoSuchBucket", "InvalidBucketName", "AuthorizationHeaderMalformed":
		return permanent("%s: %s", resp.Code, resp.Message)
	}
	return fmt.Errorf("%s: %s", resp.Code, resp.Message)
}

// putFile uploads a file and checks that the stored object is what was read: the server checks
// the Content-MD5 of each request and the returned ETag must be the file's MD5 (single PUT up
// to partSize; larger files go in parts and are checked by size).
func (s *store) putFile(ctx context.Context, p, key string) (string, error) {
	f, err := os.Open(p) //nolint:gosec // p is inside the recordings directory
	if err != nil {
		return "", permanent("%s", pathless(err))
	}
	defer func() { _ = f.Close() }()
	h := md5.New() //nolint:gosec // see import
	size, err := io.Copy(h, f)
	if err != nil {
		return "", errors.New(pathless(err))
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", errors.New(pathless(err))
	}
	return sum, s.put(ctx, key, f, size, sum, contentType(p))
}

// partSize is the size up to which a file goes in one PUT.
const partSize = 512 << 20

func (s *store) putBytes(ctx context.Context, key string, data []byte) error {
	sum := md5.Sum(data) //nolint:gosec // see import
	return s.put(ctx, key, bytes.NewReader(data), int64(len(data)), hex.EncodeToString(sum[:]), "application/json")
}

func (s *store) put(ctx context.Context, key string, rd io.Reader, size int64, sum, ctype string) error {
	info, err := s.client.PutObject(ctx, s.t.Bucket, key, rd, size, minio.PutObjectOptions{
		ContentType: ctype, SendContentMd5: true, PartSize: partSize,
	})
	if err != nil {
		return s3Error(err)
	}
	if size <= partSize && info.ETag != sum {
		return fmt.Errorf("checksum mismatch: the stored object's ETag %q is not the file's MD5 %s", info.ETag, sum)
	}
	if info.Size != size {
		return fmt.Errorf("size mismatch: stored %d bytes of %d", info.Size, size)
	}
	return nil
}

func contentType(p string) string {
	switch filepath.Ext(p) {
	case ".mp4":
		return "video/mp4"
	case ".mkv":
		return "video/x-matroska"
	case ".webm":
		return "video/webm"
	}
	return "application/octet-stream"
}
