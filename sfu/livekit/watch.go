package livekit

import (
	lkp "github.com/livekit/protocol/livekit"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-media/sluice/sfu"
)

// watch follows the room until the session ends: each change of its participants, tracks,
// mutes or metadata is sent to the client (ParticipantUpdate, RoomUpdate), and the tracks of
// the others that the client wants (auto-subscribe, or its UpdateSubscription choices) are
// subscribed.
func (s *session) watch() {
	sent := map[string]*lkp.ParticipantInfo{} // by sid, as last sent (version cleared)
	roomMeta := s.room.Info().Metadata
	for {
		changed := s.room.Changed()
		s.syncRoom(sent, &roomMeta)
		select {
		case <-changed:
		case <-s.poke:
		case <-s.resync:
			clear(sent) // a resumed client gets the whole room again
			roomMeta = ""
		case <-s.ctx.Done():
			return
		case <-s.p.Done():
			s.close(s.p.LeaveReason(), nil)
			return
		}
	}
}

// syncRoom sends what changed since sent and updates the subscriptions.
func (s *session) syncRoom(sent map[string]*lkp.ParticipantInfo, roomMeta *string) {
	if md := s.room.Info().Metadata; md != *roomMeta {
		*roomMeta = md
		s.send(&lkp.SignalResponse{Message: &lkp.SignalResponse_RoomUpdate{RoomUpdate: &lkp.RoomUpdate{Room: roomInfo(s.room)}}})
	}
	var updates []*lkp.ParticipantInfo
	var want []*sfu.Track
	seen := map[string]bool{}
	for _, p := range s.room.Participants() {
		var perm *lkp.ParticipantPermission
		if p == s.p {
			perm = s.permission()
		} else if s.srv.hidden(p) {
			continue
		}
		info := participantInfo(p, perm)
		seen[info.Sid] = true
		if prev := sent[info.Sid]; prev == nil || !proto.Equal(prev, info) {
			sent[info.Sid] = info
			out := proto.CloneOf(info)
			out.Version = s.srv.version.Add(1)
			updates = append(updates, out)
		}
		if p != s.p {
			for _, t := range p.Tracks() {
				if !t.Closed() {
					want = append(want, t)
				}
			}
		}
	}
	for sid, prev := range sent {
		if !seen[sid] {
			delete(sent, sid)
			gone := proto.CloneOf(prev)
			gone.State = lkp.ParticipantInfo_DISCONNECTED
			gone.Tracks = nil
			gone.Version = s.srv.version.Add(1)
			updates = append(updates, gone)
		}
	}
	if len(updates) > 0 {
		s.send(&lkp.SignalResponse{Message: &lkp.SignalResponse_Update{Update: &lkp.ParticipantUpdate{Participants: updates}}})
	}
	if s.grant.canSubscribe {
		s.sub.sync(want)
	}
}
