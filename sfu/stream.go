package sfu

import (
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
)

// ProtocolStats are the figures only the protocol knows (from RTCP receiver reports and the
// like). A nil pointer means unknown.
type ProtocolStats struct {
	PacketsLost *int64
	JitterMs    *float64
	RTTMs       *float64
	// Retransmits counts packets the sender resent (SRT).
	Retransmits *int64
}

// StreamSpec describes one media session on one protocol connection.
type StreamSpec struct {
	Direction  string
	Protocol   string
	RemoteAddr string
	// Stats, when set, supplies the protocol figures of stream.stats; it is called from the
	// hub's goroutine and must not block.
	Stats func() ProtocolStats
}

// Stream is one media session of a participant: the publish or play side of a protocol
// connection. It is started by StartStream (stream.publishing / stream.playing) and ended by
// End, or by the participant's Close.
type Stream struct {
	p         *Participant
	sid       string
	spec      StreamSpec
	startedAt time.Time
	ended     atomic.Bool // set with the room's opMu held
}

// StartStream opens a stream of the participant and reports it (stream.publishing for publish,
// stream.playing for play).
func (p *Participant) StartStream(spec StreamSpec) (*Stream, error) {
	s := &Stream{p: p, sid: NewID(PrefixStream), spec: spec, startedAt: p.room.hub.clock()}
	err := p.op(func() error {
		p.mu.Lock()
		p.streams = append(p.streams, s)
		p.mu.Unlock()
		typ := EventStreamPlaying
		if spec.Direction == DirectionPublish {
			typ = EventStreamPublishing
		}
		s.emit(typ, "", nil, false)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s, nil
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
}

func (s *Stream) endLocked(reason string, err error) {
	if s.ended.Swap(true) {
		return
	}
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

func (s *Stream) emitStats() {
	_ = s.p.op(func() error {
		if !s.ended.Load() {
			s.emit(EventStreamStats, "", nil, true)
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
			info.Retransmits = ps.Retransmits
		}
	}
	return info
}

func (s *Stream) emit(typ, reason string, e *ErrorInfo, stats bool) {
	ev := &Event{
		Type:   typ,
		Room:   s.p.room.Info(),
		Stream: s.Info(stats),
		Reason: reason,
		Error:  e,
	}
	ev.Participant = s.p.Info()
	s.p.room.hub.emit.Emit(ev)
}
