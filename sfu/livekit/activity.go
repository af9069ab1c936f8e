package livekit

import (
	lkp "github.com/livekit/protocol/livekit"

	"github.com/sluice-media/sluice/sfu"
)

// relayActivity follows the room's active speakers and connection quality until the session
// ends: each speakers.changed reaches the client as SpeakersChanged (the speakers whose state
// changed; one that stopped is sent inactive), each participant.quality as a
// ConnectionQualityUpdate of the participants whose level changed.
func (s *session) relayActivity() {
	speaking := map[string]float32{} // sid → level, as last sent
	quality := map[string]lkp.ConnectionQuality{}
	for {
		speakersCh, qualityCh := s.room.SpeakersChanged(), s.room.QualityChanged()
		if up := speakerUpdates(speaking, s.room.Speakers()); len(up) > 0 {
			s.send(&lkp.SignalResponse{Message: &lkp.SignalResponse_SpeakersChanged{SpeakersChanged: &lkp.SpeakersChanged{Speakers: up}}})
		}
		if up := s.qualityUpdates(quality); len(up) > 0 {
			s.send(&lkp.SignalResponse{Message: &lkp.SignalResponse_ConnectionQuality{ConnectionQuality: &lkp.ConnectionQualityUpdate{Updates: up}}})
		}
		select {
		case <-speakersCh:
		case <-qualityCh:
		case <-s.ctx.Done():
			return
		}
	}
}

// speakerUpdates returns the changes from sent to current (loudest first, then the speakers
// who stopped) and records them in sent.
func speakerUpdates(sent map[string]float32, current []sfu.Speaker) []*lkp.SpeakerInfo {
	var out []*lkp.SpeakerInfo
	now := make(map[string]bool, len(current))
	for _, sp := range current {
		level := float32(sp.Level) / 100
		now[sp.SID] = true
		if prev, ok := sent[sp.SID]; !ok || prev != level {
			out = append(out, &lkp.SpeakerInfo{Sid: sp.SID, Level: level, Active: true})
			sent[sp.SID] = level
		}
	}
	for sid := range sent {
		if !now[sid] {
			out = append(out, &lkp.SpeakerInfo{Sid: sid})
			delete(sent, sid)
		}
	}
	return out
}

// qualityUpdates returns the participants whose LiveKit quality changed since sent (the worse
// of their uplink and downlink) and records them in sent.
func (s *session) qualityUpdates(sent map[string]lkp.ConnectionQuality) []*lkp.ConnectionQualityInfo {
	var out []*lkp.ConnectionQualityInfo
	for _, p := range s.room.Participants() {
		if p != s.p && s.srv.hidden(p) {
			continue
		}
		q, score, ok := lkQuality(p.Quality())
		if !ok {
			continue
		}
		if prev, had := sent[p.SID()]; had && prev == q {
			continue
		}
		sent[p.SID()] = q
		out = append(out, &lkp.ConnectionQualityInfo{ParticipantSid: p.SID(), Quality: q, Score: score})
	}
	return out
}

// lkQuality maps the worse known of two levels of participant.quality onto LiveKit's scale
// and a score (5 best … 1 worst); false when both are unknown.
func lkQuality(uplink, downlink int) (lkp.ConnectionQuality, float32, bool) {
	level := max(uplink, downlink)
	switch level {
	case sfu.QualityUnknown:
		return 0, 0, false
	case sfu.QualityExcellent:
		return lkp.ConnectionQuality_EXCELLENT, 5, true
	case sfu.QualityGood:
		return lkp.ConnectionQuality_GOOD, 4, true
	case sfu.QualityDown:
		return lkp.ConnectionQuality_LOST, 0, true
	}
	return lkp.ConnectionQuality_POOR, float32(6 - level), true // 3 … 1
}
