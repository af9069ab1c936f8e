package sfu

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Stream directions.
const (
	DirectionPublish = "publish"
	DirectionPlay    = "play"
)

// Stream protocols.
const (
	ProtocolRTMP   = "rtmp"
	ProtocolRTMPS  = "rtmps"
	ProtocolRTSP   = "rtsp"
	ProtocolWHIP   = "whip"
	ProtocolWHEP   = "whep"
	ProtocolWebRTC = "webrtc"
	ProtocolSRT    = "srt"
	ProtocolHLS    = "hls"
)

// ProtocolStats are the figures only the protocol knows (from RTCP receiver reports and the
// like). A nil pointer means unknown.
type ProtocolStats struct {
	PacketsLost *int64
	JitterMs    *float64
	RTTMs       *float64
	// Retransmits counts packets the sender resent (SRT).
	Retransmits *int64
	// Bytes counts the bytes of the protocol connection in the stream's direction: received
	// from a publisher, sent to a player.
	Bytes *int64
	// DroppedFrames counts the frames the server could not use or deliver (RTMP: before a
	// sequence header, refused by the packetizer).
	DroppedFrames *int64
	// PacketsExpected counts the packets the RTCP receiver reports expected so far (the base
	// of PacketsLost), and ReportedAt is when the latest report came: with them the hub rates
	// the connection's quality (participant.quality). Not part of stream.stats.
	PacketsExpected *int64
	ReportedAt      time.Time
}

// StreamSpec describes one media session on one protocol connection.
type StreamSpec struct {
	Direction  string
	Protocol   string
	RemoteAddr string
	// Stats, when set, supplies the protocol figures of stream.stats; it is called from the
	// hub's goroutine and must not block.
	Stats func() ProtocolStats
	// ExpectTracks is the size of a publish session's announced or negotiated track set (RTMP
	// onMetaData, the WHIP offer's media sections); 0 when unknown. stream.publishing waits
	// until the participant publishes that many tracks (unknown: one audio and one video), or
	// at most PublishSettle, so that it lists the session's initial tracks.
	ExpectTracks int
}

// PublishSettle bounds how long stream.publishing waits for the initial track set; a track
// published after it is reported by stream.updated.
const PublishSettle = time.Second

// Stream is one media session of a participant: the publish or play side of a protocol
// connection. It is started by StartStream (stream.publishing / stream.playing) and ended by
// End, or by the participant's Close.
type Stream struct {
	p         *Participant
	sid       string
	spec      StreamSpec
	startedAt time.Time
	ended     atomic.Bool // set with the room's opMu held

	// Set with the room's opMu held.
	announced bool        // stream.publishing / stream.playing emitted
	settle    *time.Timer // bounds the wait for the initial track set

	mu  sync.Mutex
	had []string // every track the stream carried, for its terminal event

	window streamWindow // loss over the last evaluations, owned by the hub's quality evaluation
}

// StartStream opens a stream of the participant and reports it (stream.publishing for publish,
// stream.playing for play). A publish stream is reported once its initial track set is
// published (see StreamSpec.ExpectTracks), at most PublishSettle later.
func (p *Participant) StartStream(spec StreamSpec) (*Stream, error) {
	s := &Stream{p: p, sid: NewID(PrefixStream), spec: spec, startedAt: p.room.hub.clock()}
	err := p.op(func() error {
		p.mu.Lock()
		p.streams = append(p.streams, s)
		p.mu.Unlock()
		if spec.Direction == DirectionPublish && !s.trackSetComplete() {
			s.settle = time.AfterFunc(PublishSettle, s.settled)
			return nil
		}
		s.announceLocked()
		return nil
	})
	if err != nil {
		return nil, err
	}
	p.settle()
	return s, nil
}

// trackSetComplete reports whether the participant publishes the stream's initial track set.
func (s *Stream) trackSetComplete() bool {
	tracks := s.p.Tracks()
	if s.spec.ExpectTracks > 0 {
		return len(tracks) >= s.spec.ExpectTracks
	}
	var audio, video bool
	for _, t := range tracks {
		audio = audio || t.kind == KindAudio
		video = video || t.kind == KindVideo
	}
	return audio && video
}

// settled ends the wait for the initial track set.
func (s *Stream) settled() {
	_ = s.p.op(func() error {
		if !s.ended.Load() {
			s.announceLocked()
		}
		return nil
	})
}

// announceLocked emits stream.publishing / stream.playing once; opMu held.
func (s *Stream) announceLocked() {
	if s.announced {
		return
	}
	s.announced = true
	if s.settle != nil {
		s.settle.Stop()
	}
	typ := EventStreamPlaying
	if s.spec.Direction == DirectionPublish {
		typ = EventStreamPublishing
	}
	s.emit(typ, "", nil, false)
}

// tracksChangedLocked follows a track published, unpublished or subscribed by the participant
// while the stream is live: the wait for the initial set ends when it is complete, and a change after
// stream.publishing is reported by stream.updated; opMu held.
func (s *Stream) tracksChangedLocked() {
	if s.ended.Load() {
		return
	}
	if s.spec.Direction != DirectionPublish {
		s.Info(false) // a play stream's tracks are its subscriptions: remember them for its end
		return
	}
	if !s.announced {
		if s.trackSetComplete() {
			s.announceLocked()
		}
		return
	}
	s.emit(EventStreamUpdated, "", nil, false)
}

// SID returns the stream's server id.
func (s *Stream) SID() string { return s.sid }

// End closes the stream: stream.unpublished / stream.stopped with reason, or stream.failed when
// err is not nil. Idempotent.
func (s *Stream) End(reason string, err error) {
	_ = s.p.op(func() error {
		s.p.mu.Lock()
		for i, o := range s.p.streams {
			if o == s {
				s.p.streams = append(s.p.streams[:i:i], s.p.streams[i+1:]...)
				break
			}
		}
		s.p.mu.Unlock()
		s.endLocked(reason, err)
		return nil
	})
	s.p.settle()
}

func (s *Stream) endLocked(reason string, err error) {
	if s.ended.Load() {
		return
	}
	s.announceLocked() // a stream that ends while waiting for its tracks still begins
	s.ended.Store(true)
	switch {
	case err != nil:
		s.emit(EventStreamFailed, reason, &ErrorInfo{Code: errorCode(reason), Message: err.Error()}, false)
	case s.spec.Direction == DirectionPublish:
		s.emit(EventStreamUnpublished, reason, nil, false)
	default:
		s.emit(EventStreamStopped, reason, nil, false)
	}
}

func errorCode(reason string) string {
	if reason == "" {
		return ReasonError
	}
	return reason
}

// emitStats reports the stream's figures. They are gathered before taking the room's lock (the
// protocol's Stats may take its own locks); the lock only orders the event among the room's.
func (s *Stream) emitStats() {
	ev := s.event(EventStreamStats, "", nil, true)
	_ = s.p.op(func() error {
		if !s.ended.Load() {
			s.p.room.hub.emit.Emit(ev)
		}
		return nil
	})
}

// Info returns the stream object; with stats it carries the live figures.
func (s *Stream) Info(stats bool) *StreamInfo {
	state := "live"
	if s.ended.Load() {
		state = "ended"
	}
	info := &StreamInfo{
		SID:        s.sid,
		Direction:  s.spec.Direction,
		Protocol:   s.spec.Protocol,
		State:      state,
		RemoteAddr: s.spec.RemoteAddr,
		Tracks:     []string{},
	}
	var bitrate, fps float64
	var kf int64
	if s.spec.Direction == DirectionPublish {
		for _, t := range s.p.Tracks() {
			info.Tracks = append(info.Tracks, t.sid)
			bitrate += t.rate.Bitrate()
			if t.kind == KindVideo {
				fps = t.rate.FPS()
				kf = t.kfInterval.Load() / int64(time.Millisecond)
			}
		}
	} else {
		for _, sub := range s.p.Subscriptions() {
			info.Tracks = append(info.Tracks, sub.track.sid)
			bitrate += sub.rate.Bitrate()
			if sub.track.kind == KindVideo {
				fps = sub.rate.FPS()
			}
		}
	}
	s.mu.Lock()
	if state == "live" {
		for _, sid := range info.Tracks {
			if !slices.Contains(s.had, sid) {
				s.had = append(s.had, sid)
			}
		}
	} else {
		info.Tracks = append(info.Tracks[:0], s.had...) // what the stream had
	}
	s.mu.Unlock()
	if stats {
		kbps := float64(int64(bitrate/100)) / 10
		fps = float64(int64(fps*10)) / 10
		info.BitrateKbps, info.FPS = &kbps, &fps
		if kf > 0 {
			info.KeyframeIntervalMs = &kf
		}
		if s.spec.Stats != nil {
			ps := s.spec.Stats()
			info.PacketsLost, info.JitterMs, info.RTTMs = ps.PacketsLost, ps.JitterMs, ps.RTTMs
			info.Retransmits, info.Bytes, info.DroppedFrames = ps.Retransmits, ps.Bytes, ps.DroppedFrames
		}
	}
	return info
}

func (s *Stream) emit(typ, reason string, e *ErrorInfo, stats bool) {
	s.p.room.hub.emit.Emit(s.event(typ, reason, e, stats))
}

func (s *Stream) event(typ, reason string, e *ErrorInfo, stats bool) *Event {
	return &Event{
		Type:        typ,
		Room:        s.p.room.Info(),
		Participant: s.p.Info(),
		Stream:      s.Info(stats),
		Reason:      reason,
		Error:       e,
	}
}
