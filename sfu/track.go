package sfu

import (
	"sync"
	"sync/atomic"
	"time"
)

// Track sources.
const (
	SourceCamera     = "camera"
	SourceMicrophone = "microphone"
	SourceScreen     = "screen"
	SourceIngest     = "ingest"
)

// KeyframeRequester asks a publisher for a keyframe (a PLI to a WebRTC publisher). It is called
// from the producer's or a subscriber's goroutine and must not block.
type KeyframeRequester interface {
	RequestKeyframe()
}

// KeyframeRequesterFunc adapts a function to KeyframeRequester.
type KeyframeRequesterFunc func()

// RequestKeyframe calls f.
func (f KeyframeRequesterFunc) RequestKeyframe() { f() }

// TrackSpec describes a track a participant publishes.
type TrackSpec struct {
	Codec  Codec
	Source string
	// Name is a free label (the WebRTC mid or stream id, "video", …) for logs and status.
	Name          string
	Width, Height int
	// CacheGOP keeps the packets since the last keyframe so that a new subscriber starts at once
	// (for publishers that cannot be asked for a keyframe: RTMP, RTSP).
	CacheGOP bool
	// Keyframes receives throttled keyframe requests; nil when the publisher cannot make one.
	Keyframes KeyframeRequester
	// SID, when set, is the track's server id instead of a new one: signalling protocols
	// (LiveKit) announce a track before its first packet tells its codec.
	SID string
	// AudioLevel, when set, is fed the levels of an audio track's packets (the RFC 6464
	// header extension) by the producer: the track's participant is then a candidate speaker
	// (speakers.changed).
	AudioLevel *AudioLevel
}

// SenderReport maps a track's RTP clock to wall-clock time (RTCP SR, RFC 3550 §6.4.1). Ingests
// that generate RTP themselves set one at the start so that tracks align exactly.
type SenderReport struct {
	RTPTime uint32
	NTPTime time.Time
}

// ntpEpochOffset is the seconds from the NTP epoch (1900) to the Unix epoch (1970).
const ntpEpochOffset = 2208988800

// FromNTP converts a 64-bit NTP timestamp of an RTCP sender report (RFC 3550 §4, RFC 5905 §6)
// to time.Time.
func FromNTP(ntp uint64) time.Time {
	sec := int64(ntp>>32) - ntpEpochOffset
	frac := int64(ntp&0xffffffff) * 1e9 >> 32
	return time.Unix(sec, frac)
}

// ToNTP is t in the 64-bit NTP format of RTCP sender reports; FromNTP is its inverse.
func ToNTP(t time.Time) uint64 {
	sec := uint64(t.Unix()) + ntpEpochOffset                     //nolint:gosec // after 1970
	frac := (uint64(t.Nanosecond()) << 32) / uint64(time.Second) //nolint:gosec // < 1e9
	return sec<<32 | frac
}

// Track is one published media track and its fan-out. Packets are written by one producer at a
// time through WritePacket and delivered to every Subscription without copying; the subscriber
// list is a copy-on-write snapshot read without a lock.
//
// A track is created by Participant.Publish and ends when the participant unpublishes it or
// leaves: Done is closed, every subscription drains and ends with ErrTrackClosed. A derived
// track (Derive: a transcoded form of a published track) ends with the track it is made from.
type Track struct {
	sid         string
	participant *Participant
	spec        TrackSpec
	kind        Kind
	hub         *Hub
	keyframes   KeyframeRequester

	subs   atomic.Pointer[[]*Subscription]
	subsMu sync.Mutex // serializes changes to subs and derived

	// from is the track a derived track is made from (nil for a published track); derived are
	// the tracks made from this one (guarded by subsMu). See Derive.
	from    *Track
	derived []*Track

	closed atomic.Bool
	done   chan struct{}

	// Producer-owned state (touched only inside WritePacket).
	gop       []*Packet
	gopTS     uint32
	gopValid  bool
	lastKFTS  uint32
	lastKFAt  int64
	haveKF    bool
	gopLimit  int
	prodClock func() time.Time

	// Counters, written by the producer and read by status and metrics.
	packets      atomic.Uint64
	bytes        atomic.Uint64
	frames       atomic.Uint64
	lastPacketAt atomic.Int64 // unix nanoseconds
	kfInterval   atomic.Int64 // nanoseconds between the last two keyframes
	lastKFReq    atomic.Int64 // unix nanoseconds of the last forwarded keyframe request
	kfPending    atomic.Bool  // a request was throttled: send it when the interval allows
	kfRequests   atomic.Uint64

	muted  atomic.Bool
	width  atomic.Int32
	height atomic.Int32
	sr     atomic.Pointer[SenderReport]

	// Rates, computed by the hub's ticker from the counters.
	rate rateMeter

	// Watchdog state, owned by the hub's ticker; interruptedFlag mirrors it for readers.
	interrupted     bool
	interruptedFlag atomic.Bool
	publishedAt     time.Time
}

// gopMaxPackets bounds the GOP cache: a longer GOP is not cached (subscribers then wait for the
// next keyframe), so a stream with rare keyframes cannot hold unbounded memory.
const gopMaxPackets = 4096

func newTrack(p *Participant, spec TrackSpec) *Track {
	sid := spec.SID
	if sid == "" {
		sid = NewID(PrefixTrack)
	}
	t := &Track{
		sid:         sid,
		participant: p,
		spec:        spec,
		kind:        spec.Codec.Kind(),
		hub:         p.room.hub,
		keyframes:   spec.Keyframes,
		done:        make(chan struct{}),
		gopLimit:    gopMaxPackets,
		prodClock:   p.room.hub.clock,
	}
	empty := []*Subscription{}
	t.subs.Store(&empty)
	t.width.Store(int32(spec.Width))
	t.height.Store(int32(spec.Height))
	return t
}

// SID returns the track's server id.
func (t *Track) SID() string { return t.sid }

// Kind returns audio or video.
func (t *Track) Kind() Kind { return t.kind }

// Codec returns the track's codec.
func (t *Track) Codec() Codec { return t.spec.Codec }

// Source returns camera, microphone, screen or ingest.
func (t *Track) Source() string { return t.spec.Source }

// Name returns the publisher's label for the track.
func (t *Track) Name() string { return t.spec.Name }

// Participant returns the publisher.
func (t *Track) Participant() *Participant { return t.participant }

// Done is closed when the track is unpublished.
func (t *Track) Done() <-chan struct{} { return t.done }

// Closed reports whether the track was unpublished.
func (t *Track) Closed() bool { return t.closed.Load() }

// Muted reports the publisher's mute state.
func (t *Track) Muted() bool { return t.muted.Load() }

// SetMuted records the publisher's mute state: one track.muted or track.unmuted when it
// changed. Media keeps flowing as the publisher sends it; muting is the publisher's statement.
func (t *Track) SetMuted(muted bool) error { return t.participant.SetTrackMuted(t, muted) }

// Size returns the video resolution last reported by the publisher (0 when unknown).
func (t *Track) Size() (width, height int) { return int(t.width.Load()), int(t.height.Load()) }

// SetSenderReport records the RTP/wall-clock mapping of the track (safe for concurrent use).
func (t *Track) SetSenderReport(sr SenderReport) { t.sr.Store(&sr) }

// SenderReport returns the last RTP/wall-clock mapping, if any.
func (t *Track) SenderReport() (SenderReport, bool) {
	if sr := t.sr.Load(); sr != nil {
		return *sr, true
	}
	return SenderReport{}, false
}

// LastPacketAt returns when the last packet was written (zero before the first).
func (t *Track) LastPacketAt() time.Time {
	if n := t.lastPacketAt.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Info returns the event/API object of the track.
func (t *Track) Info() *TrackInfo {
	w, h := t.Size()
	info := &TrackInfo{
		SID:            t.sid,
		ParticipantSID: t.participant.sid,
		Kind:           string(t.kind),
		Codec:          t.spec.Codec.Name,
		Source:         t.spec.Source,
		Width:          w,
		Height:         h,
		Muted:          t.muted.Load(),
	}
	if t.from != nil {
		info.TranscodedFrom = t.from.sid
		info.Muted = t.from.muted.Load()
	}
	return info
}

// WritePacket fans p out to every subscriber. It must be called by one goroutine at a time (the
// producer) and never blocks: a subscriber whose queue is full loses the packet, and a video
// subscriber then skips to the next keyframe, which is requested. p must not be modified
// afterwards. Writing to a closed track does nothing.
func (t *Track) WritePacket(p *Packet) {
	if t.closed.Load() {
		return
	}
	now := t.prodClock().UnixNano()
	p.Arrival = now
	t.packets.Add(1)
	t.bytes.Add(uint64(len(p.Payload) + rtpHeaderSize))
	t.lastPacketAt.Store(now)
	if t.kind == KindVideo {
		if p.Header.Marker {
			t.frames.Add(1)
		}
		if p.Keyframe && (!t.haveKF || p.Header.Timestamp != t.lastKFTS) {
			if t.haveKF {
				t.kfInterval.Store(now - t.lastKFAt)
			}
			t.haveKF, t.lastKFTS, t.lastKFAt = true, p.Header.Timestamp, now
		}
		if t.spec.CacheGOP {
			t.cacheGOP(p)
		}
		if t.kfPending.Load() {
			t.RequestKeyframe() // one that the throttle held back
		}
	}
	for _, s := range *t.subs.Load() {
		s.offer(p)
	}
}

// rtpHeaderSize is the fixed RTP header, counted in byte figures.
const rtpHeaderSize = 12

func (t *Track) cacheGOP(p *Packet) {
	switch {
	case p.Keyframe && (!t.gopValid || p.Header.Timestamp != t.gopTS):
		clear(t.gop)
		t.gop = append(t.gop[:0], p)
		t.gopTS, t.gopValid = p.Header.Timestamp, true
	case !t.gopValid:
	case len(t.gop) >= t.gopLimit:
		clear(t.gop)
		t.gop, t.gopValid = t.gop[:0], false
	default:
		t.gop = append(t.gop, p)
	}
}

// RequestKeyframe forwards a keyframe request to the publisher, at most once per
// Config.KeyframeRequestInterval; a request inside the interval is remembered and sent when
// the interval ends (with the next video packet), so that no waiting subscriber is forgotten.
// Safe for concurrent use; never blocks.
func (t *Track) RequestKeyframe() {
	if t.keyframes == nil || t.kind != KindVideo || t.closed.Load() {
		return
	}
	now := t.hub.clock().UnixNano()
	last := t.lastKFReq.Load()
	if now-last < int64(t.hub.cfg.KeyframeRequestInterval) || !t.lastKFReq.CompareAndSwap(last, now) {
		t.kfPending.Store(true)
		return
	}
	t.kfPending.Store(false)
	t.kfRequests.Add(1)
	t.keyframes.RequestKeyframe()
}

// Subscribe attaches sink to the track. Delivery starts at a keyframe for video (from the GOP
// cache when the track keeps one, otherwise a keyframe is requested). The subscription runs its
// own goroutine until Close, the sink's error, or the end of the track. Egress workers subscribe
// here directly; participants use Participant.Subscribe so that events are emitted.
func (t *Track) Subscribe(sink Sink, opts SubscribeOptions) (*Subscription, error) {
	s := newSubscription(t, sink, opts)
	t.subsMu.Lock()
	if t.closed.Load() {
		t.subsMu.Unlock()
		return nil, ErrTrackClosed
	}
	old := *t.subs.Load()
	next := make([]*Subscription, len(old), len(old)+1)
	copy(next, old)
	next = append(next, s)
	t.subs.Store(&next)
	t.subsMu.Unlock()
	s.start()
	if t.kind == KindVideo && !t.spec.CacheGOP {
		t.RequestKeyframe()
	}
	return s, nil
}

func (t *Track) detach(s *Subscription) {
	t.subsMu.Lock()
	defer t.subsMu.Unlock()
	old := *t.subs.Load()
	next := make([]*Subscription, 0, len(old))
	for _, o := range old {
		if o != s {
			next = append(next, o)
		}
	}
	t.subs.Store(&next)
}

// Subscriptions returns the current subscriptions.
func (t *Track) Subscriptions() []*Subscription { return *t.subs.Load() }

// close ends the track and the tracks derived from it: subscriptions drain what they have and
// end with ErrTrackClosed. It does not wait for subscribers; their owners do. Idempotent.
func (t *Track) close() {
	t.subsMu.Lock()
	if t.closed.Swap(true) {
		t.subsMu.Unlock()
		return
	}
	close(t.done)
	derived := t.derived
	t.subsMu.Unlock()
	for _, d := range derived {
		d.close()
	}
}
