package sfu

import (
	"errors"
	"fmt"
)

// ErrNoTranscoder is returned by Hub.Transcode when no transcoder can run the conversion: none
// is configured, transcoding is disabled, or ffmpeg is missing. The wrapping error names which.
var ErrNoTranscoder = errors.New("no transcoder")

// Transcoder converts tracks into codecs their readers can take (AAC to Opus for browsers, Opus
// to AAC for RTMP, VP8 to H.264). The daemon's edge provides one (egress/transcode) and sets it
// on the hub with SetTranscoder; the core only declares what it needs.
type Transcoder interface {
	// Transcode returns src converted to the codec named to (a Codec* name) as a derived track
	// (see Track.Derive), and release, which the caller calls once when it no longer reads the
	// track, after ending its subscriptions to it. Callers asking for the same src and to share
	// one conversion, started by the first and stopped after the last release. The derived
	// track ends early when src ends or the transcoder stops; readers watch its Done.
	// Safe for concurrent use; it starts the conversion but does not wait for its first packet.
	Transcode(src *Track, to string) (out *Track, release func(), err error)
}

// transcoderBox holds the hub's transcoder (an interface value cannot be stored atomically).
type transcoderBox struct{ t Transcoder }

// SetTranscoder sets the transcoder Transcode uses (nil removes it). Call it before serving.
func (h *Hub) SetTranscoder(t Transcoder) {
	if t == nil {
		h.transcoder.Store(nil)
		return
	}
	h.transcoder.Store(&transcoderBox{t})
}

// Transcode converts src through the hub's transcoder (see Transcoder.Transcode); without one
// it fails with ErrNoTranscoder. Safe for concurrent use.
func (h *Hub) Transcode(src *Track, to string) (*Track, func(), error) {
	b := h.transcoder.Load()
	if b == nil {
		return nil, nil, fmt.Errorf("%w is configured", ErrNoTranscoder)
	}
	return b.t.Transcode(src, to)
}

// Derive creates a track derived from t, such as its transcoded form. The derived track belongs
// to t's participant in events and status (its Info names t in TranscodedFrom) but is not one
// of the participant's published tracks: it is not in Tracks, not announced by
// track.published, not watched for interruptions and never makes its participant the room's
// main publisher. One producer goroutine (a transcoder's output) writes it with WritePacket;
// readers subscribe to it as to any track (Participant.Subscribe or Subscribe).
//
// The derived track ends, from producer to consumers, when t ends or when end is called
// (idempotent, from any goroutine but a Sink callback): its subscriptions drain and end with
// ErrTrackClosed, and participants still subscribed get track.unsubscribed. Derive fails with
// ErrTrackClosed once t has ended; a derived track cannot itself be derived from.
func (t *Track) Derive(spec TrackSpec) (d *Track, end func(), err error) {
	if t.from != nil {
		return nil, nil, errors.New("derive: the track is itself derived")
	}
	if spec.Codec.Name == "" || spec.Codec.ClockRate == 0 {
		return nil, nil, errors.New("derive: codec name and clock rate are required")
	}
	if spec.Source == "" {
		spec.Source = t.spec.Source
	}
	d = newTrack(t.participant, spec)
	d.from = t
	d.publishedAt = t.hub.clock()
	t.subsMu.Lock()
	if t.closed.Load() {
		t.subsMu.Unlock()
		return nil, nil, ErrTrackClosed
	}
	t.derived = append(t.derived, d)
	t.subsMu.Unlock()
	return d, d.endDerived, nil
}

// DerivedFrom returns the track a derived track is made from, or nil for a published track.
func (t *Track) DerivedFrom() *Track { return t.from }

// Derived returns the tracks currently derived from t.
func (t *Track) Derived() []*Track {
	t.subsMu.Lock()
	defer t.subsMu.Unlock()
	return append([]*Track(nil), t.derived...)
}

// endDerived ends a derived track (the end function of Derive).
func (t *Track) endDerived() {
	p := t.participant
	r := p.room
	r.opMu.Lock()
	if !t.closed.Load() {
		p.dropSubscribersLocked(t)
		t.close()
	}
	r.opMu.Unlock()
	t.from.subsMu.Lock()
	for i, o := range t.from.derived {
		if o == t {
			t.from.derived = append(t.from.derived[:i:i], t.from.derived[i+1:]...)
			break
		}
	}
	t.from.subsMu.Unlock()
	r.notify() // sessions following the source re-check what they read
}

// dropSubscribersLocked ends the participant bookkeeping of every other participant's
// subscription to t (track.unsubscribed); the subscriptions themselves end with the track.
// Called with the room's opMu held.
func (p *Participant) dropSubscribersLocked(t *Track) {
	for _, s := range t.Subscriptions() {
		if sub := s.subscriber; sub != nil && sub != p {
			sub.dropSubLocked(s)
		}
	}
}
