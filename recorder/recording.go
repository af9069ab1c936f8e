package recorder

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/sluice-media/sluice/egress/composite"
	"github.com/sluice-media/sluice/sfu"
)

// Request describes a recording to start.
type Request struct {
	Room string
	// Participant limits the recording to one identity ("" records every publisher of the room,
	// one file per participant).
	Participant string
	// Track limits it further: "audio", "video" or a track SID.
	Track string
	// Format is mp4 or mkv ("" uses the config's); a codec the format cannot hold switches the
	// file to the other format.
	Format string
	// Segment rolls files at the first keyframe after this long (0: the config's).
	Segment time.Duration
	// MaxDuration ends the recording after this long (0: no limit).
	MaxDuration time.Duration
	// Auto names the rule that started it.
	Auto string
	// Composite, with a layout, records the room composed: the participant "composite".
	Composite composite.Options
	// Storage names the object storage target to upload to once it ends ("": recording.storage;
	// StorageLocal: none).
	Storage string
}

// StorageLocal as a request's storage keeps the recording local even when recording.storage
// names a default target.
const StorageLocal = "local"

// Reasons of the recording events (shared/EVENTS.md, Additions): each status transition
// carries one.
const (
	ReasonRequested   = "requested"
	ReasonPaused      = "paused"
	ReasonResumed     = "resumed"
	ReasonMaxDuration = "max_duration"
	ReasonSourceLost  = "source_lost"
)

// LocationLocal is the location of a file on the recordings disk (not uploaded).
const LocationLocal = "local"

// recording is one logical recording: it finds its source participants in the hub, runs one
// capture per participant connection, and owns the manifest, which only its goroutine writes.
// It ends on stop, max duration, shutdown, a write failure, or when no source is back within
// the grace period. The Recorder starts it and waits for it.
type recording struct {
	env   *Recorder
	req   Request
	dir   string // absolute
	rel   string // relative to the recordings directory
	cmds  chan command
	notes chan captureNote
	done  chan struct{}
	// comp is the room's program of a composite recording, release gives it back.
	comp    *composite.Composite
	release func()

	mu   sync.Mutex
	view *Recording // snapshot for readers

	// Owned by the goroutine.
	m         *Recording
	log       *slog.Logger
	caps      map[*capture]string // capture → participant SID
	fileOf    map[*capture]int    // index in m.Files of a capture's open file
	finishing bool
	failure   *sfu.ErrorInfo
	lastWrite time.Time
}

type commandKind int

const (
	cmdStop commandKind = iota
	cmdPause
	cmdResume
	cmdApply
)

type command struct {
	kind  commandKind
	reply chan error
	// apply changes the manifest (cmdApply: a file's upload finished while recording).
	apply func(*Recording)
}

func (rec *recording) snapshot() *Recording {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.view.clone()
}

// publish updates the readers' snapshot.
func (rec *recording) publish() {
	rec.m.PausedMs = rec.m.pausedMs(rec.env.clock())
	v := rec.m.clone()
	rec.mu.Lock()
	rec.view = v
	rec.mu.Unlock()
}

// send delivers a command to the goroutine and waits for its answer.
func (rec *recording) send(ctx context.Context, k commandKind) error {
	return rec.sendCmd(ctx, command{kind: k, reply: make(chan error, 1)})
}

func (rec *recording) sendCmd(ctx context.Context, cmd command) error {
	select {
	case rec.cmds <- cmd:
	case <-rec.done:
		return ErrNotActive
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-cmd.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (rec *recording) run(ctx context.Context) {
	defer close(rec.done)
	env := rec.env
	rec.emit(sfu.EventRecordingUpdated, ReasonRequested) // status starting
	if err := os.MkdirAll(rec.dir, 0o750); err != nil {
		rec.failure = fileError(err)
		rec.finish(StatusFailed, sfu.ReasonError)
		return
	}
	rec.writeManifest(true)
	var graceC, maxC <-chan time.Time
	var grace *time.Timer
	var program <-chan struct{} // the composite's layout, participants or restarts changed
	var shown composite.Info
	if rec.comp != nil {
		program, shown = rec.comp.Changed(), rec.comp.Info()
		defer rec.release()
	}
	if rec.req.MaxDuration > 0 {
		t := time.NewTimer(rec.req.MaxDuration)
		defer t.Stop()
		maxC = t.C
	}
	for {
		changed := env.hub.Changed()
		if room := env.hub.Room(rec.req.Room); room != nil {
			rec.reconcile(room)
		}
		switch {
		case len(rec.caps) == 0 && grace == nil:
			grace = time.NewTimer(env.cfg.Grace)
			graceC = grace.C
		case len(rec.caps) > 0 && grace != nil:
			grace.Stop()
			grace, graceC = nil, nil
		}
		select {
		case <-ctx.Done():
			rec.finish(StatusComplete, sfu.ReasonServerShutdown)
			return
		case cmd := <-rec.cmds:
			if rec.command(cmd) {
				return
			}
		case n := <-rec.notes:
			rec.handle(n)
			if rec.failure != nil {
				rec.finish(StatusFailed, sfu.ReasonError)
				return
			}
		case <-changed:
		case <-program:
			program = rec.comp.Changed()
			info := rec.comp.Info()
			reason := composite.ChangeReason(shown, info)
			shown = info
			rec.m.Layout, rec.m.Participants = info.Layout, info.Participants
			rec.writeManifest(false)
			rec.emit(sfu.EventRecordingUpdated, reason)
		case <-graceC:
			rec.failure = &sfu.ErrorInfo{Code: CodeSourceLost, Message: fmt.Sprintf("the source left and did not come back within %s", env.cfg.Grace)}
			rec.finish(StatusFailed, ReasonSourceLost)
			return
		case <-maxC:
			rec.finish(StatusComplete, ReasonMaxDuration)
			return
		}
	}
}

// command runs a command; it reports whether the recording ended.
func (rec *recording) command(cmd command) bool {
	switch cmd.kind {
	case cmdStop:
		rec.finish(StatusComplete, sfu.ReasonStopped)
		cmd.reply <- nil
		return true
	case cmdApply:
		cmd.apply(rec.m)
		rec.writeManifest(true)
		rec.emit(sfu.EventRecordingUpdated, "")
		cmd.reply <- nil
	case cmdPause, cmdResume:
		pause := cmd.kind == cmdPause
		if rec.m.Paused == pause {
			cmd.reply <- nil
			return false
		}
		now := rec.env.clock().UTC()
		rec.m.Paused = pause
		reason := ReasonResumed
		if pause {
			rec.m.Pauses = append(rec.m.Pauses, Pause{PausedAt: now})
			rec.m.Status, reason = StatusPaused, ReasonPaused
		} else {
			if n := len(rec.m.Pauses); n > 0 {
				rec.m.Pauses[n-1].ResumedAt = &now
			}
			rec.m.Status = StatusActive
			if rec.m.StartedAt == nil {
				rec.m.Status = StatusStarting // paused before its first file
			}
		}
		for c := range rec.caps {
			c.setPaused(pause)
		}
		if pause {
			rec.awaitPaused()
		}
		rec.writeManifest(true)
		rec.emit(sfu.EventRecordingUpdated, reason)
		cmd.reply <- nil
	}
	return false
}

// awaitPaused handles the captures' notes until every capture has closed its file for the
// pause (or ended), so that the one paused event lists the closed files with their figures.
func (rec *recording) awaitPaused() {
	waiting := make(map[*capture]bool, len(rec.caps))
	for c := range rec.caps {
		waiting[c] = true
	}
	quiet := rec.finishing
	rec.finishing = true // the files closed by the pause are reported by the paused event
	defer func() { rec.finishing = quiet }()
	for len(waiting) > 0 && rec.failure == nil {
		n := <-rec.notes
		rec.handle(n)
		if (n.kind == notePauseApplied && n.paused) || n.kind == noteEnded {
			delete(waiting, n.c)
		}
	}
}

// selector is what the recording takes: the participant asked for (else every publisher) and
// the track asked for ("audio", "video" or a track SID; else all).
func (rec *recording) selector() sfu.Selector {
	sel := sfu.Selector{Identity: rec.req.Participant}
	switch rec.req.Track {
	case "":
	case string(sfu.KindAudio), string(sfu.KindVideo):
		sel.Kind = sfu.Kind(rec.req.Track)
	default:
		sel.SID = rec.req.Track
	}
	return sel
}

// reconcile starts a capture for every source participant that has none.
func (rec *recording) reconcile(room *sfu.Room) {
	sel := rec.selector()
	for _, p := range sel.Publishers(room) {
		if slices.Contains(slices.Collect(maps.Values(rec.caps)), p.SID()) {
			continue
		}
		c := newCapture(p, captureConfig{
			root:      rec.env.dir,
			dir:       rec.rel,
			format:    rec.req.Format,
			fragment:  rec.env.cfg.FragmentDuration,
			segment:   rec.req.Segment,
			sel:       sel,
			changed:   rec.env.hub.Changed,
			fs:        rec.env.fs,
			clock:     rec.env.clock,
			log:       rec.log.With("participant", p.Identity()),
			notes:     rec.notes,
			paused:    rec.m.Paused,
			openAfter: openAfter,
		})
		rec.caps[c] = p.SID()
		c.start()
	}
}

// openAfter is how long a capture waits for every track before starting a file without the
// silent ones.
const openAfter = 3 * time.Second

// handle applies a capture's report.
func (rec *recording) handle(n captureNote) {
	switch n.kind {
	case noteFileOpened:
		n.file.Location = LocationLocal
		rec.m.Files = append(rec.m.Files, n.file)
		rec.m.Details = append(rec.m.Details, FileDetail{Name: path.Base(n.file.Path), Participant: n.c.p.Identity(), Format: n.format, Tracks: n.tracks})
		rec.fileOf[n.c] = len(rec.m.Files) - 1
		for _, sid := range n.tracks {
			if !slices.Contains(rec.m.Tracks, sid) {
				rec.m.Tracks = append(rec.m.Tracks, sid)
			}
		}
		first := rec.m.Status == StatusStarting
		if len(rec.m.Files) == 1 && n.format != "" {
			rec.m.Format = n.format // the format the codecs took (VP8: mkv)
		}
		if first {
			rec.m.Status = StatusActive
			t := n.file.StartedAt
			rec.m.StartedAt = &t
		}
		rec.totals()
		rec.writeManifest(true)
		if first {
			rec.emit(sfu.EventRecordingStarted, ReasonRequested)
		}
	case noteFileProgress:
		if i, ok := rec.fileOf[n.c]; ok {
			n.file.Location = rec.m.Files[i].Location
			rec.m.Files[i] = n.file
		}
		rec.totals()
		rec.writeManifest(false)
	case noteFileClosed:
		if i, ok := rec.fileOf[n.c]; ok {
			n.file.Location = rec.m.Files[i].Location
			rec.m.Files[i] = n.file
			rec.m.Details[i].Complete = rec.failure == nil || n.file.SizeBytes > 0
			delete(rec.fileOf, n.c)
		}
		rec.totals()
		rec.writeManifest(true)
		if !rec.finishing {
			rec.emit(sfu.EventRecordingUpdated, "")
		}
		if rec.m.Upload != nil && !rec.finishing {
			rec.env.queueUpload(rec.m.ID) // the segment is complete: upload it now
		}
	case noteFailed:
		if rec.failure == nil {
			rec.failure = n.err
		}
	case noteEnded:
		delete(rec.caps, n.c)
		delete(rec.fileOf, n.c)
	case notePauseApplied: // awaited by a pause; a resume's is news to nobody
	}
}

// totals recomputes the recording's size and duration from its files.
func (rec *recording) totals() {
	var size, dur int64
	for _, f := range rec.m.Files {
		size += f.SizeBytes
		dur += f.DurationMs
	}
	rec.m.SizeBytes, rec.m.DurationMs = size, dur
}

// finish stops every capture, waits for their files to close, and writes the final state:
// status ending (recording.updated), then complete (recording.ended) or failed
// (recording.failed with the error), both with reason.
func (rec *recording) finish(status, reason string) {
	rec.finishing = true
	rec.m.Status = StatusEnding
	if reason == "" {
		reason = sfu.ReasonError
	}
	rec.writeManifest(true)
	rec.emit(sfu.EventRecordingUpdated, reason)
	for c := range rec.caps {
		c.stop()
	}
	for len(rec.caps) > 0 {
		rec.handle(<-rec.notes)
	}
	if rec.failure != nil {
		status = StatusFailed
		if reason != ReasonSourceLost && reason != sfu.ReasonServerShutdown {
			reason = sfu.ReasonError
		}
	}
	if status == StatusComplete && len(rec.m.Files) == 0 {
		status = StatusFailed
		rec.failure = &sfu.ErrorInfo{Code: "no_media", Message: "the recording ended before any media was written"}
	}
	now := rec.env.clock().UTC()
	rec.m.Status, rec.m.EndedAt, rec.m.Reason = status, &now, reason
	if n := len(rec.m.Pauses); rec.m.Paused && n > 0 {
		rec.m.Pauses[n-1].ResumedAt = &now
		rec.m.Paused = false
	}
	if status == StatusFailed {
		rec.m.Error = rec.failure
	}
	rec.totals()
	rec.writeManifest(true)
	if status == StatusFailed {
		rec.emit(sfu.EventRecordingFailed, reason)
	} else {
		rec.emit(sfu.EventRecordingEnded, reason)
	}
	rec.log.Info("recording ended", "status", status, "reason", reason, "files", len(rec.m.Files), "duration_ms", rec.m.DurationMs)
}

// writeManifest saves the manifest (always when force, else at most every 10 s) and updates
// the readers' snapshot. A failed write is logged: the media files are what matters, and the
// manifest is rewritten at the next change.
func (rec *recording) writeManifest(force bool) {
	rec.publish()
	now := rec.env.clock()
	if !force && now.Sub(rec.lastWrite) < 10*time.Second {
		return
	}
	rec.lastWrite = now
	if err := writeManifest(rec.dir, rec.m); err != nil {
		rec.log.Warn("writing the manifest", "err", pathless(err))
	}
}

// emit reports the recording's current state; figures are those of the moment.
func (rec *recording) emit(typ, reason string) {
	rec.m.PausedMs = rec.m.pausedMs(rec.env.clock())
	ev := &sfu.Event{Type: typ, Room: rec.env.roomInfo(rec.req.Room), Recording: rec.m.Info(), Reason: reason}
	if typ == sfu.EventRecordingFailed {
		ev.Error = rec.m.Error
	}
	rec.env.emit.Emit(ev)
}

// recordingDir returns the directory of a recording, relative to the recordings directory.
func recordingDir(room, id string) string {
	return path.Join(sanitize(room), id)
}

// absDir joins the recordings directory and a relative path.
func absDir(root, rel string) string { return filepath.Join(root, filepath.FromSlash(rel)) }

// ended reports whether the recording's goroutine has finished (Stop has returned), although
// the catalogue may not hold its final entry yet: a new recording of the same source may start.
func (rec *recording) ended() bool {
	select {
	case <-rec.done:
		return true
	default:
		return false
	}
}
