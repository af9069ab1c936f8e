package recorder

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
)

// captureConfig is what a capture needs from its recording.
type captureConfig struct {
	root      string // recordings directory
	dir       string // the recording's directory, relative to root
	format    string // preferred: mp4 or mkv
	fragment  time.Duration
	segment   time.Duration
	sel       sfu.Selector           // the tracks recorded
	changed   func() <-chan struct{} // the hub's change signal
	fs        FS
	clock     func() time.Time
	log       *slog.Logger
	notes     chan<- captureNote
	paused    bool
	openAfter time.Duration // how long to wait for every track before opening a file without some
}

// noteKind says what a captureNote reports.
type noteKind int

const (
	noteFileOpened   noteKind = iota // the header of a new file is on disk
	noteFileProgress                 // a fragment was written
	noteFileClosed                   // a file was closed
	noteFailed                       // writing failed: the recording fails
	noteEnded                        // the capture ended (its goroutine is about to return)
	notePauseApplied                 // a pause or resume took effect (paused says which)
)

// captureNote is a report from a capture to its recording.
type captureNote struct {
	c      *capture
	kind   noteKind
	file   sfu.RecordingFile
	format string
	tracks []string
	err    *sfu.ErrorInfo
	paused bool
}

// inPacket is one packet handed from a track's subscription to the capture goroutine.
type inPacket struct {
	p     *sfu.Packet
	track int
	gap   bool
	at    int64 // arrival, Unix nanoseconds
}

// capture records one participant's tracks (one connection of it) into a sequence of segment
// files. It subscribes to the tracks directly, and one goroutine does everything else in
// arrival order: reading frames, timing, muxing and writing. It ends when the participant leaves
// (after draining what its tracks delivered) or when the recording stops it.
//
// Lifecycle: newCapture starts nothing; start launches the goroutine; stop asks it to end and
// Done is closed when it has (files closed, subscriptions ended). Every report reaches the
// recording through notes, the last being noteEnded.
type capture struct {
	cfg        captureConfig
	p          *sfu.Participant
	in         chan inPacket
	wake       chan struct{} // pausedWant changed
	pausedWant atomic.Bool
	quit       chan struct{}
	once       sync.Once
	done       chan struct{}
	tr         []*trackState
	seg        *segmentFile
	state      captureState

	waitSince   time.Time
	ref         *trackState // the track whose keyframes start files and fragments
	fragStart   int64       // ref ticks at which the current fragment started
	lastFlush   time.Time
	rotate      bool
	failed      bool
	malformed   uint64
	lostPackets uint64
	recorded    map[string]bool // track SIDs that reached a file
	trackAdded  time.Time       // when the last track was subscribed
}

// trackSettle is how long a capture waits after a track appears before it opens a file, so
// that tracks a publisher announces one after the other (WHIP) start in the same file.
const trackSettle = 500 * time.Millisecond

type captureState int

const (
	stateWaiting captureState = iota // buffering until every track can start a file
	stateOpen                        // writing a file
	statePaused                      // dropping media
)

func newCapture(p *sfu.Participant, cfg captureConfig) *capture {
	c := &capture{
		cfg:      cfg,
		p:        p,
		in:       make(chan inPacket, 1024),
		wake:     make(chan struct{}, 1),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
		recorded: map[string]bool{},
	}
	if cfg.paused {
		c.state = statePaused
		c.pausedWant.Store(true)
	}
	return c
}

func (c *capture) start() { go c.run() }

// stop asks the capture to end; it does not wait (the recording keeps draining notes).
func (c *capture) stop() { c.once.Do(func() { close(c.quit) }) }

// setPaused pauses or resumes the capture; it never blocks. Safe for concurrent use.
func (c *capture) setPaused(p bool) {
	c.pausedWant.Store(p)
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// trackSink hands a subscription's packets to the capture goroutine.
type trackSink struct {
	c   *capture
	idx int
}

var errCaptureStopped = errors.New("capture stopped")

// WritePacket implements sfu.Sink; it blocks while the capture is busy (the subscription's
// bounded queue then absorbs bursts, and drops past it) and never after the capture stopped.
func (s *trackSink) WritePacket(p *sfu.Packet, gap bool) error {
	select {
	case s.c.in <- inPacket{p: p, track: s.idx, gap: gap, at: s.c.cfg.clock().UnixNano()}:
		return nil
	case <-s.c.quit:
		return errCaptureStopped
	}
}

func (c *capture) note(n captureNote) {
	n.c = c
	c.cfg.notes <- n // the recording drains notes until every capture is done
}

func (c *capture) run() {
	defer close(c.done)
	defer c.note(captureNote{kind: noteEnded})
	defer c.teardown()
	c.waitSince = c.cfg.clock()
	changed := c.cfg.changed() // before reading the tracks: no change falls in between
	c.syncTracks()
	tick := time.NewTicker(min(c.cfg.fragment/4, 250*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-c.quit:
			return
		case <-c.p.Done():
			c.drain()
			return
		case <-changed:
			changed = c.cfg.changed()
			c.syncTracks()
		case pk := <-c.in:
			c.packet(pk)
		case <-c.wake:
			paused := c.pausedWant.Load()
			c.pause(paused)
			c.note(captureNote{kind: notePauseApplied, paused: paused})
		case now := <-tick.C:
			c.tick(now)
		}
		if c.failed {
			<-c.quit // the recording stops every capture once it learns of the failure
			return
		}
	}
}

// drain processes what the ended tracks still deliver, then returns.
func (c *capture) drain() {
	for _, t := range c.tr {
		if t.sub == nil {
			continue
		}
		for waiting := true; waiting; {
			select {
			case pk := <-c.in:
				c.packet(pk)
			case <-t.sub.Done():
				waiting = false
			case <-c.quit:
				return
			}
		}
	}
	for {
		select {
		case pk := <-c.in:
			c.packet(pk)
		default:
			return
		}
	}
}

func (c *capture) teardown() {
	c.stop() // unblocks sinks
	if c.malformed > 0 || c.lostPackets > 0 {
		c.cfg.log.Info("capture ended with skipped media", "malformed", c.malformed, "lost_packets", c.lostPackets)
	}
	for _, t := range c.tr {
		if t.sub != nil {
			t.sub.Close()
		}
	}
	if !c.failed { // the frames a reader still holds (decode-order lookahead)
		for _, t := range c.tr {
			if t.dep != nil && !t.removed {
				t.dep.Flush(t.onFr)
			}
		}
	}
	c.closeFile()
}

// syncTracks subscribes to new tracks of the participant and forgets unpublished ones.
func (c *capture) syncTracks() {
	tracks := c.cfg.sel.Tracks(c.p)
	current := map[*sfu.Track]bool{}
	for _, t := range tracks {
		current[t] = true
	}
	for _, ts := range c.tr {
		if !ts.removed && !current[ts.track] {
			ts.removed = true
		}
		delete(current, ts.track)
	}
	for _, t := range tracks {
		if !current[t] {
			continue
		}
		ts := &trackState{track: t, codec: t.Codec(), kind: t.Kind(), clock: t.Codec().ClockRate}
		dep, err := media.NewReader(t.Codec())
		if err != nil {
			c.cfg.log.Warn("track not recorded", "track", t.SID(), "codec", t.Codec().Name, "err", err)
			ts.skip = true
			c.tr = append(c.tr, ts)
			continue
		}
		ts.dep = dep
		ts.cfg, _ = dep.Params()
		idx := len(c.tr)
		ts.onFr = func(f *media.Frame) { c.frame(ts, f) }
		c.tr = append(c.tr, ts)
		sub, err := t.Subscribe(&trackSink{c: c, idx: idx}, sfu.SubscribeOptions{})
		if err != nil {
			ts.removed = true
			continue
		}
		ts.sub = sub
		c.trackAdded = c.cfg.clock()
		if c.state == stateOpen {
			c.rotate = true // the next file holds the new track
		}
	}
}

func (c *capture) packet(pk inPacket) {
	ts := c.tr[pk.track]
	if ts.removed || ts.skip {
		return
	}
	ext, skipped := ts.ts.Next(&pk.p.Header)
	if skipped {
		c.lostPackets++
	}
	lost := pk.gap || skipped
	ts.observe(ext, pk.at)
	if !ts.dep.Push(pk.p, ext, lost, ts.onFr) {
		c.malformed++
		if ts.kind == sfu.KindVideo && ts.sub != nil {
			ts.sub.RequestKeyframe()
		}
	} else if lost && ts.kind == sfu.KindVideo && ts.sub != nil {
		ts.sub.RequestKeyframe()
	}
}

// frame takes one complete frame of a track.
func (c *capture) frame(ts *trackState, f *media.Frame) {
	if cfg, changed := ts.dep.Params(); changed || !ts.cfg.Ready(ts.codec.Name) {
		if changed && c.state == stateOpen && ts.ft != nil && ts.cfg.Ready(ts.codec.Name) {
			c.rotate = true // new parameters (resolution): a new file with a new header
		}
		ts.cfg = cfg
	}
	switch c.state {
	case statePaused:
		return
	case stateWaiting:
		if !ts.cfg.Ready(ts.codec.Name) {
			return
		}
		ts.buffer(f)
		c.tryOpen()
	case stateOpen:
		if ts.ft == nil {
			if ts.cfg.Ready(ts.codec.Name) && (ts.kind == sfu.KindAudio || f.Key) {
				c.rotate = true
			}
			return
		}
		if ts == c.ref && f.Key && c.rotateDue(f) {
			c.closeFile()
			c.enterWaiting()
			ts.buffer(f)
			c.tryOpen()
			return
		}
		c.add(ts, f)
	}
}

func (c *capture) rotateDue(f *media.Frame) bool {
	if c.rotate {
		return true
	}
	return ticksToNs(f.DTS+c.ref.off, c.ref.clock) >= int64(c.cfg.segment)
}

func (c *capture) enterWaiting() {
	c.state = stateWaiting
	c.waitSince = c.cfg.clock()
	c.rotate = false
	for _, t := range c.tr {
		t.pre, t.preData = t.pre[:0], t.preData[:0]
	}
}

// tryOpen opens a file when every track can start: video at a keyframe that audio does not
// start more than 100 ms after, audio at its first frame. A track that stays silent for
// openAfter is left out (and joins at the next segment).
func (c *capture) tryOpen() {
	now := c.cfg.clock()
	late := now.Sub(c.waitSince) >= c.cfg.openAfter
	if !late && now.Sub(c.trackAdded) < trackSettle {
		return // more tracks may be on their way; the tick tries again
	}
	var ref *trackState
	kIdx := -1
	for _, t := range c.tr {
		if t.kind == sfu.KindVideo && !t.removed && !t.skip {
			if k := t.lastKeyframe(); k >= 0 {
				ref, kIdx = t, k
				break
			}
			if !late {
				return // wait for this video track's keyframe
			}
		}
	}
	const slack = int64(100 * time.Millisecond)
	if ref != nil {
		kWall := ref.wall(ref.pre[kIdx].pts)
		for _, t := range c.tr {
			if t.kind != sfu.KindAudio || t.removed || t.skip {
				continue
			}
			t.dropPreBefore(kWall - int64(time.Second))
			if len(t.pre) == 0 || t.wall(t.pre[0].pts) > kWall+slack {
				if !late {
					return // wait for the audio, or for a keyframe it does not start after
				}
			}
		}
	} else {
		for _, t := range c.tr {
			if t.kind != sfu.KindAudio || t.removed || t.skip {
				continue
			}
			if len(t.pre) == 0 {
				if !late {
					return
				}
				continue
			}
			if ref == nil || t.wall(t.pre[0].pts) < ref.wall(ref.pre[0].pts) {
				ref, kIdx = t, 0
			}
		}
		if ref == nil {
			return
		}
	}
	c.open(ref, kIdx)
}

// open starts a file at frame kIdx of ref with every track that has frames to give.
func (c *capture) open(ref *trackState, kIdx int) {
	var in []*trackState
	for _, t := range c.tr {
		if !t.removed && !t.skip && len(t.pre) > 0 {
			in = append(in, t)
		}
	}
	format := c.pickFormat(in)
	var kept []*trackState
	for _, t := range in {
		if (format == "mp4" && mp4Holds(t.codec.Name)) || (format == "mkv" && mkvHolds(t.codec.Name)) {
			kept = append(kept, t)
		} else {
			c.cfg.log.Warn("track left out of the file: its codec does not fit the format", "codec", t.codec.Name, "format", format)
		}
	}
	if len(kept) == 0 {
		return
	}
	sort.SliceStable(kept, func(i, j int) bool { return kept[i].kind == sfu.KindVideo && kept[j].kind != sfu.KindVideo })
	// Freeze the clock mappings: on the publisher's sender reports when every track has one,
	// else on arrival times.
	allSR := true
	for _, t := range kept {
		if !t.frozen {
			if _, ok := t.track.SenderReport(); !ok {
				allSR = false
			}
		}
	}
	for _, t := range kept {
		if !t.frozen {
			if allSR {
				t.useSenderReport()
			}
			t.frozen = true
		}
	}
	k := ref.pre[kIdx]
	kWall := ref.wall(k.pts)
	leadNs := ticksToNs(k.pts-k.dts, ref.clock)
	c.ref = ref
	seg := &segmentFile{format: format, startedAt: time.Unix(0, kWall)}
	if format == "mkv" {
		seg.cont = &mkvWriter{}
	} else {
		seg.cont = &fmp4Writer{}
	}
	for i, t := range kept {
		t.ft = &fileTrack{id: i + 1, codec: t.codec.Name, kind: t.kind, clock: t.clock, cfg: t.cfg}
		if t == ref {
			t.off = -k.dts
			t.minDTS = 0
		} else {
			t.off = -t.anchorExt + nsToTicks(t.anchorNs-kWall+leadNs, t.clock)
			t.minDTS = nsToTicks(leadNs, t.clock)
		}
		seg.tracks = append(seg.tracks, t.ft)
	}
	if err := c.create(seg); err != nil {
		c.fail(err)
		return
	}
	c.seg = seg
	c.state = stateOpen
	c.fragStart = 0
	c.lastFlush = c.cfg.clock()
	var sids []string
	for _, t := range kept {
		sids = append(sids, t.track.SID())
		c.recorded[t.track.SID()] = true
		start := 0
		if t == ref {
			start = kIdx
		}
		for _, p := range t.pre[start:] {
			c.add(t, &media.Frame{PTS: p.pts, DTS: p.dts, Key: p.key, Dur: p.dur, Data: t.preData[p.off : p.off+p.n]})
		}
		t.pre, t.preData = t.pre[:0], t.preData[:0]
	}
	c.cfg.log.Debug("file opened", "file", seg.rel, "tracks", len(kept))
	c.note(captureNote{kind: noteFileOpened, file: seg.info(), format: format, tracks: sids})
}

// pickFormat returns the preferred format, or the other one when only it holds every codec.
func (c *capture) pickFormat(ts []*trackState) string {
	holds := func(f string) bool {
		for _, t := range ts {
			if (f == "mp4" && !mp4Holds(t.codec.Name)) || (f == "mkv" && !mkvHolds(t.codec.Name)) {
				return false
			}
		}
		return true
	}
	other := "mkv"
	if c.cfg.format == "mkv" {
		other = "mp4"
	}
	if !holds(c.cfg.format) && holds(other) {
		return other
	}
	return c.cfg.format
}

// create makes the file, named from the identity and the start time, and writes its header.
func (c *capture) create(seg *segmentFile) error {
	ext := ".mp4"
	if seg.format == "mkv" {
		ext = ".mkv"
		webm := true
		for _, t := range seg.tracks {
			webm = webm && webmHolds(t.codec)
		}
		if webm {
			ext = ".webm"
		}
	}
	base := sanitize(c.p.Identity()) + "_" + seg.startedAt.UTC().Format("20060102T150405Z")
	hdr, err := seg.cont.header(seg.tracks)
	if err != nil {
		return err
	}
	for n := 1; ; n++ {
		name := base + ext
		if n > 1 {
			name = fmt.Sprintf("%s_%d%s", base, n, ext)
		}
		rel := path.Join(c.cfg.dir, name)
		f, err := c.cfg.fs.Create(filepath.Join(c.cfg.root, filepath.FromSlash(rel)))
		if errors.Is(err, fs.ErrExist) && n < 100 {
			continue
		}
		if err != nil {
			return err
		}
		seg.file, seg.rel = f, rel
		break
	}
	return seg.write(hdr)
}

// add appends a frame to its track of the open file, flushing a fragment when one is due.
func (c *capture) add(ts *trackState, f *media.Frame) {
	ft := ts.ft
	dts, pts := f.DTS+ts.off, f.PTS+ts.off
	if ts == c.ref && f.Key && ticksToNs(dts-c.fragStart, ts.clock) >= int64(c.cfg.fragment) {
		c.flush(false)
		c.fragStart = dts
	}
	if dts < ts.minDTS-f.Dur/2 || dts < 0 {
		return // belongs before the start of this file
	}
	if n := len(ft.samples); n > 0 {
		last := &ft.samples[n-1]
		d := dts - last.dts
		if d <= 0 {
			c.malformed++ // not increasing: drop
			return
		}
		last.dur = uint32(min(d, 1<<31))
	} else if dts < ft.end {
		c.malformed++
		return
	}
	off := pts - dts
	ft.samples = append(ft.samples, sample{dts: dts, ptsOff: int32(max(min(off, 1<<30), -(1 << 30))), dur: uint32(max(f.Dur, 0)), key: f.Key, n: len(f.Data)})
	ft.data = append(ft.data, f.Data...)
	if ts == c.ref && ticksToNs(dts-c.fragStart, ts.clock) >= int64(c.cfg.fragment)*3/2 {
		c.flush(false)
		c.fragStart = dts
	}
}

// flush writes a fragment of the open file.
func (c *capture) flush(final bool) {
	if c.seg == nil || c.failed {
		return
	}
	c.lastFlush = c.cfg.clock()
	seg := c.seg
	if err := seg.flush(final, func(i int) int64 { return nominalFor(seg.tracks[i]) }); err != nil {
		c.fail(err)
		return
	}
	c.note(captureNote{kind: noteFileProgress, file: c.seg.info()})
}

// tick flushes a file whose source went quiet.
func (c *capture) tick(now time.Time) {
	if c.state == stateOpen && now.Sub(c.lastFlush) >= c.cfg.fragment*3/2 {
		c.flush(false)
	}
	if c.state == stateWaiting {
		c.tryOpen()
	}
}

func (c *capture) pause(paused bool) {
	switch {
	case paused && c.state != statePaused:
		c.closeFile()
		c.state = statePaused
	case !paused && c.state == statePaused:
		c.enterWaiting()
		for _, t := range c.tr {
			if t.kind == sfu.KindVideo && t.sub != nil {
				t.sub.RequestKeyframe()
			}
		}
	}
}

// closeFile finishes the open file, if any.
func (c *capture) closeFile() {
	seg := c.seg
	if seg == nil {
		return
	}
	c.seg = nil
	for _, t := range c.tr {
		t.ft = nil
	}
	if c.state == stateOpen {
		c.state = stateWaiting
	}
	err := seg.close(func(i int) int64 { return nominalFor(seg.tracks[i]) })
	if err != nil && !c.failed {
		c.fail(err)
	}
	c.cfg.log.Debug("file closed", "file", seg.rel, "bytes", seg.size, "err", err)
	c.note(captureNote{kind: noteFileClosed, file: seg.info(), format: seg.format})
}

func nominalFor(ft *fileTrack) int64 {
	if ft.kind == sfu.KindVideo {
		return int64(ft.clock) / 30
	}
	return int64(ft.clock) / 50
}

// fail reports a write error; the recording then stops every capture.
func (c *capture) fail(err error) {
	if c.failed {
		return
	}
	c.failed = true
	c.cfg.log.Error("recording write failed", "err", err)
	c.note(captureNote{kind: noteFailed, err: fileError(err)})
}
