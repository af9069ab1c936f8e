package recorder

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sluice-media/sluice/egress/composite"
	"github.com/sluice-media/sluice/sfu"
)

// Sentinel errors of the recorder API.
var (
	// ErrNotFound is returned for an unknown recording id or file.
	ErrNotFound = errors.New("recording not found")
	// ErrNotActive is returned when stopping, pausing or resuming a recording that has ended.
	ErrNotActive = errors.New("recording has ended")
	// ErrConflict is returned when the same scope is already being recorded.
	ErrConflict = errors.New("already being recorded")
	// ErrClosed is returned once the recorder has stopped.
	ErrClosed = errors.New("recorder stopped")
)

// Options build a Recorder.
type Options struct {
	Config Config
	// Dir is the recordings directory (the config's dir resolved against the data dir).
	Dir    string
	Hub    *sfu.Hub
	Logger *slog.Logger
	// FS creates media files (OSFS when nil).
	FS FS
	// Clock returns the current time (time.Now when nil).
	Clock func() time.Time
	// Composites make a room's program for a recording with a layout (nil: layouts refused).
	Composites *composite.Manager
	// Storage is the `storage:` section (object storage targets).
	Storage StorageConfig
	// Env looks up environment variables for credentials (os.LookupEnv when nil).
	Env func(string) (string, bool)
	// FreeSpace returns the free bytes of the disk holding a directory (statfs when nil).
	FreeSpace func(dir string) (int64, error)
}

// Recorder runs recordings and keeps their catalogue: one manifest per recording directory,
// read back at start, so it needs no database. It starts recordings by API request or by the
// config's auto rules.
//
// New loads the catalogue and starts nothing; Run recovers recordings a crash left open
// (recording.failed), follows the auto rules, and at the end of its context finalizes every
// recording with reason server_shutdown and waits for them. Methods are safe for concurrent use.
type Recorder struct {
	cfg   Config
	dir   string
	hub   *sfu.Hub
	comps *composite.Manager
	emit  sfu.Emitter
	log   *slog.Logger
	fs    FS
	clock func() time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	recs    map[string]*entry
	crashed []*Recording        // loaded manifests a crash left open, recovered by Run
	autoFor map[string][]string // auto key → participant SIDs already recorded by it
	uploadQ []string            // ended recordings waiting for their upload

	storage    StorageConfig
	stores     map[string]*store
	uploadWake chan struct{}
	free       func(dir string) (int64, error)
	indexes    indexCache
}

// entry is a recording of the catalogue: live (rec) or ended (final).
type entry struct {
	rec   *recording
	final *Recording
	busy  bool // an upload or a deletion works on final
}

// New validates opts and loads the catalogue.
func New(opts Options) (*Recorder, error) {
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	if opts.Hub == nil || opts.Dir == "" {
		return nil, errors.New("recorder: hub and dir are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.FS == nil {
		opts.FS = OSFS{}
		if opts.Config.MinFreeMB > 0 {
			opts.FS = reserveFS{FS: OSFS{}, root: opts.Dir, min: opts.Config.MinFreeMB << 20, free: freeBytes}
		}
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Env == nil {
		opts.Env = os.LookupEnv
	}
	if opts.FreeSpace == nil {
		opts.FreeSpace = freeSpace
	}
	if opts.Storage.MaxAttempts == 0 && opts.Storage.MinBackoff == 0 && opts.Storage.MaxBackoff == 0 {
		d := DefaultStorageConfig()
		d.Targets = opts.Storage.Targets
		opts.Storage = d
	}
	if err := opts.Storage.Validate(); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	stores, err := newStores(opts.Storage, opts.Env)
	if err != nil {
		return nil, err
	}
	if err := checkTargets(opts.Config, stores); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Recorder{
		cfg: opts.Config, dir: opts.Dir, hub: opts.Hub, emit: opts.Hub.Emitter(), log: opts.Logger,
		fs: opts.FS, clock: opts.Clock, ctx: ctx, cancel: cancel, comps: opts.Composites,
		recs: map[string]*entry{}, autoFor: map[string][]string{},
		storage: opts.Storage, stores: stores, uploadWake: make(chan struct{}, 1),
		free: opts.FreeSpace,
	}
	loaded, errs := loadCatalogue(opts.Dir)
	for _, err := range errs {
		r.log.Warn("skipping an unreadable recording manifest", "err", err)
	}
	for _, m := range loaded {
		r.recs[m.ID] = &entry{final: m}
		if !m.Terminal() {
			r.crashed = append(r.crashed, m.clone()) // recovered apart from what readers see
		}
	}
	return r, nil
}

// Run recovers recordings cut off by a crash, then starts recordings by the auto rules until
// ctx ends; it then stops every recording (reason server_shutdown) and waits for them.
func (r *Recorder) Run(ctx context.Context) error {
	r.recoverCrashed()
	defer r.shutdown()
	r.wg.Add(1)
	go func() { defer r.wg.Done(); r.runUploads(r.ctx) }()
	for _, m := range r.List("", "") {
		if m.Terminal() && m.Upload != nil && (m.Upload.Status == UploadPending || (m.Upload.Status == UploadComplete && !m.Upload.LocalDeleted && r.deletesLocal(m.Upload.Target))) {
			r.queueUpload(m.ID)
		}
	}
	var sweep <-chan time.Time
	if r.cfg.Retention.enabled() {
		t := time.NewTicker(r.cfg.Retention.Interval)
		defer t.Stop()
		sweep = t.C
	}
	for {
		changed := r.hub.Changed()
		r.autoRecord()
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-sweep:
			r.Sweep()
		}
	}
}

func (r *Recorder) shutdown() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
}

// recoverCrashed marks every recording a crash left open as failed, its files cut back to
// their last complete fragment, and reports it (recording.failed).
func (r *Recorder) recoverCrashed() {
	r.mu.Lock()
	crashed := r.crashed
	r.crashed = nil
	r.mu.Unlock()
	for _, m := range crashed {
		r.recoverOne(m)
		r.mu.Lock()
		r.recs[m.ID] = &entry{final: m}
		r.mu.Unlock()
		r.emit.Emit(&sfu.Event{Type: sfu.EventRecordingFailed, Room: r.roomInfo(m.Room), Recording: m.Info(), Error: m.Error, Reason: sfu.ReasonError})
	}
}

func (r *Recorder) recoverOne(m *Recording) {
	dir := absDir(r.dir, recordingDir(m.Room, m.ID))
	listed := map[string]bool{}
	for len(m.Details) < len(m.Files) {
		m.Details = append(m.Details, FileDetail{Name: path.Base(m.Files[len(m.Details)].Path)})
	}
	for _, d := range m.Details {
		listed[d.Name] = true
	}
	// A file created just before the crash may not be listed yet.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || listed[name] || mediaFormat(name) == "" {
			continue
		}
		m.Files = append(m.Files, sfu.RecordingFile{Path: path.Join(recordingDir(m.Room, m.ID), name)})
		m.Details = append(m.Details, FileDetail{Name: name, Format: mediaFormat(name), Participant: strings.SplitN(name, "_", 2)[0]})
	}
	var last time.Time
	for i := range m.Files {
		d := &m.Details[i]
		p := filepath.Join(dir, d.Name)
		if st, err := os.Stat(p); err == nil && st.ModTime().After(last) {
			last = st.ModTime()
		}
		if d.Complete {
			continue
		}
		res, err := repairFile(p)
		if err != nil {
			r.log.Warn("recovering a recording file", "recording", m.ID, "file", d.Name, "err", err)
			continue
		}
		m.Files[i].SizeBytes, m.Files[i].DurationMs, d.Truncated = res.size, res.durationMs, res.truncated
		if m.Files[i].StartedAt.IsZero() {
			m.Files[i].StartedAt = res.modTime
		}
	}
	if last.IsZero() {
		last = r.clock()
	}
	last = last.UTC()
	m.Status, m.EndedAt, m.Paused, m.Reason = StatusFailed, &last, false, sfu.ReasonError
	m.PausedMs = m.pausedMs(last)
	m.Error = &sfu.ErrorInfo{Code: "interrupted", Message: "the daemon stopped abruptly while recording; the files play up to their last complete fragment"}
	var size, dur int64
	for _, f := range m.Files {
		size += f.SizeBytes
		dur += f.DurationMs
	}
	m.SizeBytes, m.DurationMs = size, dur
	if err := writeManifest(dir, m); err != nil {
		r.log.Warn("writing a recovered manifest", "recording", m.ID, "err", pathless(err))
	}
	r.log.Warn("recording was cut off by a crash: marked failed", "recording", m.ID, "files", len(m.Files), "duration_ms", dur)
}

// mediaFormat returns the format of a media file name, or "".
func mediaFormat(name string) string {
	switch filepath.Ext(name) {
	case ".mp4":
		return "mp4"
	case ".mkv", ".webm":
		return "mkv"
	}
	return ""
}

func (r *Recorder) roomInfo(name string) *sfu.RoomInfo {
	if room := r.hub.Room(name); room != nil {
		return room.Info()
	}
	return &sfu.RoomInfo{Name: name}
}

// Start validates req and starts a recording. The room must be open and the participant, when
// given, in it.
func (r *Recorder) Start(req Request) (*Recording, error) {
	if err := sfu.ValidateName(req.Room); err != nil {
		return nil, fmt.Errorf("room %w", err)
	}
	if req.Participant != "" {
		if err := sfu.ValidateName(req.Participant); err != nil {
			return nil, fmt.Errorf("participant %w", err)
		}
	}
	if req.Format == "" {
		req.Format = r.cfg.Format
	}
	if err := validFormat(req.Format); err != nil {
		return nil, fmt.Errorf("format: %w", err)
	}
	if req.Segment == 0 {
		req.Segment = r.cfg.SegmentDuration
	}
	if req.Segment < r.cfg.FragmentDuration {
		return nil, fmt.Errorf("segment: must be at least the fragment duration (%s)", r.cfg.FragmentDuration)
	}
	if req.MaxDuration < 0 {
		return nil, errors.New("max_duration: must not be negative")
	}
	if req.Storage == "" {
		req.Storage = r.cfg.Storage
	}
	if req.Storage == StorageLocal {
		req.Storage = ""
	}
	if req.Storage != "" && r.stores[req.Storage] == nil {
		return nil, fmt.Errorf("storage: no target named %q in storage.targets", req.Storage)
	}
	switch {
	case req.Track == "", req.Track == string(sfu.KindAudio), req.Track == string(sfu.KindVideo), strings.HasPrefix(req.Track, sfu.PrefixTrack):
	default:
		return nil, fmt.Errorf("track: %q is not audio, video or a track id", req.Track)
	}
	room := r.hub.Room(req.Room)
	if room == nil {
		return nil, fmt.Errorf("%w: %s", sfu.ErrRoomNotFound, req.Room)
	}
	var comp *composite.Composite
	var release func()
	if req.Composite.Layout != "" {
		if r.comps == nil {
			return nil, errors.New("layout: layouts need the compositor (ffmpeg)")
		}
		if req.Track != "" {
			return nil, errors.New("track: a composite recording takes the room's program whole")
		}
		spec, err := req.Composite.Spec(req.Room, req.Participant)
		if err != nil {
			return nil, fmt.Errorf("layout: %w", err)
		}
		if comp, release, err = r.comps.Acquire(spec); err != nil {
			return nil, fmt.Errorf("layout: %w", err)
		}
		req.Participant = composite.Identity
	}
	started := false
	defer func() {
		if !started && release != nil {
			release() // refused: the composite goes back
		}
	}()
	if req.Participant != "" && room.Participant(req.Participant) == nil {
		return nil, fmt.Errorf("%w: %s", sfu.ErrParticipantNotFound, req.Participant)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	for _, e := range r.recs {
		if e.rec != nil && !e.rec.ended() && e.rec.req.Room == req.Room && e.rec.req.Participant == req.Participant && e.rec.req.Track == req.Track {
			return nil, fmt.Errorf("%w by %s", ErrConflict, e.rec.m.ID)
		}
	}
	rec := r.newRecording(req)
	if comp != nil {
		rec.comp, rec.release, started = comp, release, true
		info := comp.Info()
		rec.m.Layout, rec.m.Participants = info.Layout, info.Participants
		rec.publish()
	}
	r.recs[rec.m.ID] = &entry{rec: rec}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		rec.run(r.ctx)
		final := rec.snapshot()
		r.mu.Lock()
		r.recs[final.ID] = &entry{final: final}
		r.mu.Unlock()
		if final.Upload != nil {
			r.queueUpload(final.ID)
		}
	}()
	return rec.snapshot(), nil
}

func (r *Recorder) newRecording(req Request) *recording {
	id := sfu.NewID(IDPrefix)
	rel := recordingDir(req.Room, id)
	m := &Recording{
		RecordingInfo: sfu.RecordingInfo{ID: id, Room: req.Room, Participant: req.Participant, Tracks: []string{},
			Format: req.Format, Status: StatusStarting, Files: []sfu.RecordingFile{}},
		Track: req.Track, Segment: req.Segment.String(), Auto: req.Auto, Version: manifestVersion,
	}
	if req.MaxDuration > 0 {
		m.MaxDuration = req.MaxDuration.String()
	}
	if req.Storage != "" {
		m.Storage = req.Storage
		m.Upload = &UploadState{Target: req.Storage, Status: UploadPending}
	}
	rec := &recording{
		env: r, req: req, dir: absDir(r.dir, rel), rel: rel,
		cmds: make(chan command), notes: make(chan captureNote, 64), done: make(chan struct{}),
		m: m, caps: map[*capture]string{}, fileOf: map[*capture]int{},
		log: r.log.With("recording", id, "room", req.Room),
	}
	rec.view = m.clone()
	return rec
}

func (r *Recorder) lookup(id string) (*entry, error) {
	if validID(id) != nil {
		return nil, ErrNotFound
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.recs[id]
	if e == nil {
		return nil, ErrNotFound
	}
	return e, nil
}

// Get returns a recording.
func (r *Recorder) Get(id string) (*Recording, error) {
	e, err := r.lookup(id)
	if err != nil {
		return nil, err
	}
	if e.rec != nil {
		return e.rec.snapshot(), nil
	}
	return e.final.clone(), nil
}

// List returns the recordings, newest first, filtered by room and status when not "".
func (r *Recorder) List(room, status string) []*Recording {
	r.mu.Lock()
	all := make([]*entry, 0, len(r.recs))
	for _, e := range r.recs {
		all = append(all, e)
	}
	r.mu.Unlock()
	out := []*Recording{}
	for _, e := range all {
		var v *Recording
		if e.rec != nil {
			v = e.rec.snapshot()
		} else {
			v = e.final.clone()
		}
		if (room == "" || v.Room == room) && (status == "" || v.Status == status) {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := startOf(out[i]), startOf(out[j])
		if !a.Equal(b) {
			return a.After(b)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

func startOf(r *Recording) time.Time {
	if r.StartedAt != nil {
		return *r.StartedAt
	}
	if len(r.Files) > 0 {
		return r.Files[0].StartedAt
	}
	return time.Time{}
}

// Stop ends a recording (reason stopped) and waits until its files are closed.
func (r *Recorder) Stop(ctx context.Context, id string) (*Recording, error) {
	e, err := r.lookup(id)
	if err != nil {
		return nil, err
	}
	if e.rec == nil {
		return nil, ErrNotActive
	}
	if err := e.rec.send(ctx, cmdStop); err != nil {
		return nil, err
	}
	select {
	case <-e.rec.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return e.rec.snapshot(), nil
}

// Pause stops writing a recording until Resume; the recording stays one, and the paused span
// is not in its files (the current file is closed, the next opens at resume).
func (r *Recorder) Pause(ctx context.Context, id string) (*Recording, error) {
	return r.pauseResume(ctx, id, cmdPause)
}

// Resume continues a paused recording in a new file.
func (r *Recorder) Resume(ctx context.Context, id string) (*Recording, error) {
	return r.pauseResume(ctx, id, cmdResume)
}

func (r *Recorder) pauseResume(ctx context.Context, id string, k commandKind) (*Recording, error) {
	e, err := r.lookup(id)
	if err != nil {
		return nil, err
	}
	if e.rec == nil {
		return nil, ErrNotActive
	}
	if err := e.rec.send(ctx, k); err != nil {
		return nil, err
	}
	return e.rec.snapshot(), nil
}

// FilePath returns the absolute path of a file of a recording, by its base name.
func (r *Recorder) FilePath(id, name string) (string, error) {
	rec, err := r.Get(id)
	if err != nil {
		return "", err
	}
	for _, f := range rec.Files {
		if path.Base(f.Path) != name || strings.ContainsAny(name, `/\`) || name == ".." {
			continue
		}
		p := absDir(r.dir, f.Path)
		if rel, err := filepath.Rel(r.dir, p); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return "", ErrNotFound // a manifest pointing outside the recordings directory
		}
		return p, nil
	}
	return "", ErrNotFound
}

// Active returns the recordings that have not ended, for the status snapshot.
func (r *Recorder) Active() []*Recording {
	var out []*Recording
	for _, v := range r.List("", "") {
		if !v.Terminal() {
			out = append(out, v)
		}
	}
	if out == nil {
		out = []*Recording{}
	}
	return out
}

// autoRecord starts the recordings the auto rules call for.
func (r *Recorder) autoRecord() {
	if len(r.cfg.Auto) == 0 {
		return
	}
	present := map[string]bool{}
	for _, room := range r.hub.Rooms() {
		for _, p := range room.Participants() {
			present[p.SID()] = true
		}
	}
	r.mu.Lock()
	for key, sids := range r.autoFor { // forget connections that are gone
		kept := sids[:0]
		for _, sid := range sids {
			if present[sid] {
				kept = append(kept, sid)
			}
		}
		if len(kept) == 0 {
			delete(r.autoFor, key)
		} else {
			r.autoFor[key] = kept
		}
	}
	r.mu.Unlock()
	for _, room := range r.hub.Rooms() {
		for i, rule := range r.cfg.Auto {
			if ok, _ := path.Match(rule.Room, room.Name()); !ok {
				continue
			}
			r.applyRule(i, rule, room)
		}
	}
}

// applyRule starts a recording for a room (or for each matching participant) that has a
// publisher and is not recorded by this rule yet. A publisher it already recorded does not
// restart it (after a stop or a failure); a new connection does.
func (r *Recorder) applyRule(i int, rule AutoRule, room *sfu.Room) {
	for _, p := range room.Participants() {
		if len(p.Tracks()) == 0 || p.Kind() == sfu.ParticipantComposite {
			continue // the composite is made of the others
		}
		identity := ""
		if rule.Layout != "" {
			identity = composite.Identity // one composite recording of the room
		} else if rule.Participant != "" {
			if ok, _ := path.Match(rule.Participant, p.Identity()); !ok {
				continue
			}
			identity = p.Identity()
		}
		key := fmt.Sprintf("%d/%s/%s", i, room.Name(), identity)
		r.mu.Lock()
		seen := r.autoFor[key]
		busy := false
		for _, e := range r.recs {
			if e.rec != nil && e.rec.req.Room == room.Name() && e.rec.req.Participant == identity && e.rec.req.Track == "" {
				busy = true
			}
		}
		r.mu.Unlock()
		if slices.Contains(seen, p.SID()) {
			continue
		}
		if !busy {
			req := Request{Room: room.Name(), Participant: identity, Format: rule.Format, Segment: rule.SegmentDuration, Auto: rule.Room, Storage: rule.Storage}
			if rule.Layout != "" {
				req.Participant, req.Composite = "", composite.Options{Layout: rule.Layout}
			}
			rec, err := r.Start(req)
			if err != nil {
				if !errors.Is(err, ErrClosed) {
					r.log.Warn("auto-record", "room", room.Name(), "participant", identity, "err", err)
				}
				continue
			}
			r.log.Info("auto-record started", "recording", rec.ID, "room", room.Name(), "participant", identity)
		}
		r.mu.Lock()
		r.autoFor[key] = append(r.autoFor[key], p.SID())
		r.mu.Unlock()
	}
}
