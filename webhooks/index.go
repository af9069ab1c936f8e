package webhooks

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-media/sluice/sfu"
)

// Object kinds that get exactly one terminal event, in the order reconciliation ends them.
const (
	kindStream    = "stream"
	kindTrack     = "track"
	kindPart      = "participant"
	kindRoom      = "room"
	kindRecording = "recording"
	kindBroadcast = "broadcast"
)

var reconcileOrder = []string{kindStream, kindTrack, kindPart, kindRoom, kindRecording, kindBroadcast}

// lifecycle maps an event type to the object it begins, updates or ends.
type lifecycle struct {
	kind string
	op   byte // 'b' begin, 'u' update, 'e' end
}

var lifecycles = map[string]lifecycle{
	sfu.EventRoomStarted: {kindRoom, 'b'}, sfu.EventRoomUpdated: {kindRoom, 'u'}, sfu.EventRoomFinished: {kindRoom, 'e'},
	sfu.EventParticipantJoined: {kindPart, 'b'}, sfu.EventParticipantUpdated: {kindPart, 'u'}, sfu.EventParticipantLeft: {kindPart, 'e'},
	sfu.EventTrackPublished: {kindTrack, 'b'}, sfu.EventTrackUpdated: {kindTrack, 'u'}, sfu.EventTrackMuted: {kindTrack, 'u'},
	sfu.EventTrackUnmuted: {kindTrack, 'u'}, sfu.EventTrackInterrupted: {kindTrack, 'u'}, sfu.EventTrackRecovered: {kindTrack, 'u'},
	sfu.EventTrackUnpublished: {kindTrack, 'e'},
	sfu.EventStreamPublishing: {kindStream, 'b'}, sfu.EventStreamPlaying: {kindStream, 'b'},
	sfu.EventStreamUnpublished: {kindStream, 'e'}, sfu.EventStreamStopped: {kindStream, 'e'}, sfu.EventStreamFailed: {kindStream, 'e'},
	sfu.EventStreamUpdated:    {kindStream, 'u'},
	sfu.EventRecordingStarted: {kindRecording, 'b'}, sfu.EventRecordingUpdated: {kindRecording, 'u'},
	sfu.EventRecordingEnded: {kindRecording, 'e'}, sfu.EventRecordingFailed: {kindRecording, 'e'},
	sfu.EventBroadcastStarted: {kindBroadcast, 'b'}, sfu.EventBroadcastReconnecting: {kindBroadcast, 'u'}, sfu.EventBroadcastUpdated: {kindBroadcast, 'u'},
	sfu.EventBroadcastEnded: {kindBroadcast, 'e'}, sfu.EventBroadcastFailed: {kindBroadcast, 'e'},
}

// objectID returns the id of the object of kind an event carries ("" when missing).
func objectID(kind string, ev *sfu.Event) string {
	switch {
	case kind == kindRoom && ev.Room != nil:
		return ev.Room.SID
	case kind == kindPart && ev.Participant != nil:
		return ev.Participant.SID
	case kind == kindTrack && ev.Track != nil:
		return ev.Track.SID
	case kind == kindStream && ev.Stream != nil:
		return ev.Stream.SID
	case kind == kindRecording && ev.Recording != nil:
		return ev.Recording.ID
	case kind == kindBroadcast && ev.Broadcast != nil:
		return ev.Broadcast.ID
	}
	return ""
}

// Lifecycle operations an event performs on its object (ObjectOf).
const (
	OpBegin  = 'b'
	OpUpdate = 'u'
	OpEnd    = 'e'
)

// ObjectOf says which object an event begins, updates or ends: its key (kind:id, such as
// "track:TR_…") and the operation. ok is false for events of no lifecycle (stream.stats,
// subscriptions, auth.failed…) and for events missing their object. Every begun object gets
// exactly one end.
func ObjectOf(ev *sfu.Event) (key string, op byte, ok bool) {
	lc, tracked := lifecycles[ev.Type]
	if !tracked {
		return "", 0, false
	}
	id := objectID(lc.kind, ev)
	if id == "" {
		return "", 0, false
	}
	return lc.kind + ":" + id, lc.op, true
}

// openObject is an object the log shows begun and not ended: its kind, the seq that began it
// and the latest event that carried it (whose objects the terminal event repeats).
type openObject struct {
	Kind  string     `json:"kind"`
	Begin uint64     `json:"begin"`
	Last  *sfu.Event `json:"last"`
}

// index is the set of open objects of one node, derived from the log. It is kept in memory by
// Emit, snapshotted to the state bucket, and rebuilt at start from the snapshot plus the events
// stored after it. Safe for concurrent use.
type index struct {
	node string

	mu       sync.Mutex
	seq      uint64 // last seq applied
	stopping uint64 // seq of this node's last server.stopping
	open     map[string]*openObject
	dirty    bool
}

func newIndex(node string) *index { return &index{node: node, open: map[string]*openObject{}} }

// apply records the effect of an event of this node stored at seq.
func (x *index) apply(ev *sfu.Event, seq uint64) {
	key, op, tracked := ObjectOf(ev)
	x.mu.Lock()
	defer x.mu.Unlock()
	if seq > x.seq {
		x.seq = seq
	}
	x.dirty = true
	if ev.Type == sfu.EventServerStopping {
		x.stopping = seq
		return
	}
	if !tracked {
		return
	}
	switch op {
	case OpBegin:
		x.open[key] = &openObject{Kind: lifecycles[ev.Type].kind, Begin: seq, Last: ev}
	case OpUpdate:
		if o := x.open[key]; o != nil {
			o.Last = ev
		}
	case OpEnd:
		delete(x.open, key)
	}
}

// snapshot is the stored form of the index.
type snapshot struct {
	Seq      uint64                 `json:"seq"`
	Stopping uint64                 `json:"stopping"`
	Open     map[string]*openObject `json:"open"`
}

func (x *index) snapshot() (snapshot, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	s := snapshot{Seq: x.seq, Stopping: x.stopping, Open: make(map[string]*openObject, len(x.open))}
	for k, o := range x.open {
		c := *o // apply replaces Last under mu; the copy is encoded without it
		s.Open[k] = &c
	}
	dirty := x.dirty
	x.dirty = false
	return s, dirty
}

// pending returns the open objects begun at or before seq, of the given kinds, in reconcile
// order (by kind, then by begin seq), with this node's last server.stopping.
func (x *index) pending(seq uint64, kinds ...string) ([]*openObject, uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	want := map[string]bool{}
	for _, k := range kinds {
		want[k] = true
	}
	var out []*openObject
	for _, o := range x.open {
		if o.Begin <= seq && want[o.Kind] {
			out = append(out, o)
		}
	}
	rank := map[string]int{}
	for i, k := range reconcileOrder {
		rank[k] = i
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return rank[out[i].Kind] < rank[out[j].Kind]
		}
		return out[i].Begin < out[j].Begin
	})
	return out, x.stopping
}

// isOpen reports whether the object is still open.
func (x *index) isOpen(o *openObject) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.open[o.Kind+":"+objectID(o.Kind, o.Last)] != nil
}

func (l *Log) snapshotKey() string { return "open." + kvKey(l.opts.Node) }

// saveSnapshot stores the index when it changed since the last save.
func (l *Log) saveSnapshot(ctx context.Context) error {
	s, dirty := l.index.snapshot()
	if !dirty {
		return nil
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(s); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if _, err := l.state.Put(ctx, l.snapshotKey(), buf.Bytes()); err != nil {
		l.index.mu.Lock()
		l.index.dirty = true
		l.index.mu.Unlock()
		return fmt.Errorf("saving the open objects (%d bytes): %w", buf.Len(), err)
	}
	return nil
}

// recover rebuilds the index: the last snapshot, then this node's events stored after it.
func (l *Log) recover(ctx context.Context) error {
	var snap snapshot
	entry, err := l.state.Get(ctx, l.snapshotKey())
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return fmt.Errorf("events: reading the open objects: %w", err)
	default:
		if err := decodeSnapshot(entry.Value(), &snap); err != nil {
			l.log.Warn("events: the open-objects snapshot is unreadable; rebuilding it from the whole log", "err", err)
			snap = snapshot{}
		}
	}
	l.index.mu.Lock()
	l.index.seq, l.index.stopping = snap.Seq, snap.Stopping
	if snap.Open != nil {
		l.index.open = snap.Open
	}
	l.index.mu.Unlock()

	last, err := l.LastSeq(ctx)
	if err != nil {
		return err
	}
	replayed := 0
	if last > snap.Seq {
		start := time.Now()
		err := l.Read(ctx, Query{After: snap.Seq}, func(r Record) error {
			if r.Node != l.opts.Node {
				return nil
			}
			ev, err := r.Event()
			if err != nil {
				l.log.Warn("events: undecodable event in the log", "seq", r.Seq, "err", err)
				return nil
			}
			l.index.apply(ev, r.Seq)
			replayed++
			return nil
		})
		if err != nil {
			return err
		}
		l.log.Info("events: rebuilt the open objects from the log", "from_seq", snap.Seq+1, "to_seq", last, "events", replayed, "took", time.Since(start).Round(time.Millisecond))
	}
	l.startSeq = last
	return l.saveSnapshot(ctx)
}

func decodeSnapshot(raw []byte, s *snapshot) error {
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return err
	}
	data, err := io.ReadAll(io.LimitReader(zr, 256<<20))
	if err != nil {
		return err
	}
	return json.Unmarshal(data, s)
}

// Reconcile gives every object this node's log shows begun and never ended before this process
// started its one terminal event: reason server_shutdown when the log holds a clean
// server.stopping after the object began, else error (a crash). Rooms, participants, tracks
// and streams are ended now; recordings and broadcasts are left EgressGrace to the components
// that recover them (the recorder ends a recording cut by a crash itself, with its files), and
// those still open then are ended in the background. It returns the number of events emitted
// now. Call it once, after the daemon's components started.
func (l *Log) Reconcile(ctx context.Context) int {
	n := l.reconcile(kindStream, kindTrack, kindPart, kindRoom)
	if objs, _ := l.index.pending(l.startSeq, kindRecording, kindBroadcast); len(objs) > 0 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			t := time.NewTimer(l.opts.EgressGrace)
			defer t.Stop()
			select {
			case <-t.C:
				l.reconcile(kindRecording, kindBroadcast)
			case <-ctx.Done():
			case <-l.ctx.Done():
			}
		}()
	}
	return n
}

func (l *Log) reconcile(kinds ...string) int {
	objs, stopping := l.index.pending(l.startSeq, kinds...)
	n := 0
	for _, o := range objs {
		if !l.index.isOpen(o) {
			continue
		}
		reason := sfu.ReasonError
		if stopping > o.Begin {
			reason = sfu.ReasonServerShutdown
		}
		ev := terminalEvent(o, reason, l.clock())
		l.Emit(ev)
		n++
		l.log.Info("events: reconciled an object left open", "kind", o.Kind, "type", ev.Type, "reason", reason, "room", ev.RoomName())
	}
	return n
}

// terminalEvent builds the one terminal event of an object left open.
func terminalEvent(o *openObject, reason string, now time.Time) *sfu.Event {
	last := o.Last
	ev := &sfu.Event{Room: last.Room, Participant: last.Participant, Reason: reason}
	if ev.Room != nil {
		r := *ev.Room
		ev.Room = &r
	}
	errInfo := &sfu.ErrorInfo{Code: "interrupted", Message: "the daemon ended without finishing this object (crash or kill); ended at restart"}
	if reason == sfu.ReasonServerShutdown {
		errInfo = &sfu.ErrorInfo{Code: sfu.ReasonServerShutdown, Message: "the daemon shut down without finishing this object; ended at restart"}
	}
	switch o.Kind {
	case kindRoom:
		ev.Type, ev.Participant = sfu.EventRoomFinished, nil
		ev.Room.Participants = 0
	case kindPart:
		ev.Type = sfu.EventParticipantLeft
	case kindTrack:
		ev.Type, ev.Track = sfu.EventTrackUnpublished, last.Track
	case kindStream:
		s := *last.Stream
		s.State = "ended"
		s.BitrateKbps, s.FPS, s.PacketsLost, s.JitterMs, s.RTTMs, s.KeyframeIntervalMs = nil, nil, nil, nil, nil, nil
		ev.Stream = &s
		ev.Type = sfu.EventStreamStopped
		if s.Direction == sfu.DirectionPublish {
			ev.Type = sfu.EventStreamUnpublished
		}
	case kindRecording:
		r := *last.Recording
		r.Status = "failed"
		r.Error = errInfo
		t := now.UTC()
		r.EndedAt = &t
		ev.Type, ev.Recording, ev.Error, ev.Participant = sfu.EventRecordingFailed, &r, errInfo, nil
	case kindBroadcast:
		b := *last.Broadcast
		t := now.UTC()
		b.EndedAt = &t
		ev.Participant = nil
		if reason == sfu.ReasonServerShutdown {
			b.Status = "ended"
			ev.Type, ev.Broadcast = sfu.EventBroadcastEnded, &b
		} else {
			b.Status, b.Error = "failed", errInfo
			ev.Type, ev.Broadcast, ev.Error = sfu.EventBroadcastFailed, &b, errInfo
		}
	}
	return ev
}
