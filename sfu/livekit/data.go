package livekit

import (
	"slices"
	"sync"
	"time"

	lkp "github.com/livekit/protocol/livekit"
	"github.com/pion/webrtc/v4"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-media/sluice/sfu"
)

// Data channel labels of LiveKit clients.
const (
	dataReliable = "_reliable"
	dataLossy    = "_lossy"
)

// Data limits: a packet larger than MaxDataPacket, or beyond the rate of dataRate packets a
// second (bursts of dataBurst) from one participant, is dropped and counted.
const (
	MaxDataPacket = 15 << 10
	dataRate      = 100.0
	dataBurst     = 200.0
)

// dataLimiter is a token bucket for one participant's data packets.
type dataLimiter struct {
	mu     sync.Mutex
	tokens float64
	at     time.Time
}

func (l *dataLimiter) allow(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.at.IsZero() {
		l.tokens = dataBurst
	} else {
		l.tokens = min(dataBurst, l.tokens+now.Sub(l.at).Seconds()*dataRate)
	}
	l.at = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

// onDataChannel takes the client's data channels on its publisher connection: every packet
// is relayed to the room (or the identities it names).
func (s *session) onDataChannel(dc *webrtc.DataChannel) {
	reliable := dc.Label() == dataReliable
	dc.OnMessage(func(msg webrtc.DataChannelMessage) {
		s.onData(msg.Data, reliable, time.Now())
	})
}

// onData relays one data packet from the client. Packets other than user data (speaker
// updates, RPC, streams…) are relayed as they are, with the sender stamped.
func (s *session) onData(raw []byte, reliable bool, now time.Time) {
	if !s.grant.canData {
		s.dataDropped.Add(1)
		return
	}
	if len(raw) > MaxDataPacket || !s.dataLimit.allow(now) {
		s.dataDropped.Add(1)
		return
	}
	var pkt lkp.DataPacket
	if err := proto.Unmarshal(raw, &pkt); err != nil {
		s.dataDropped.Add(1)
		return
	}
	info := s.p.Info()
	pkt.ParticipantIdentity, pkt.ParticipantSid = info.Identity, info.SID
	dest := pkt.GetDestinationIdentities()
	if u := pkt.GetUser(); u != nil {
		// Deprecated fields, still set and read by older SDKs.
		u.ParticipantIdentity, u.ParticipantSid = info.Identity, info.SID //nolint:staticcheck // see above
		if len(dest) == 0 {
			dest = u.GetDestinationIdentities() //nolint:staticcheck // see above
		}
	}
	out, err := proto.Marshal(&pkt)
	if err != nil {
		return
	}
	for _, peer := range s.srv.peers(s.room, s) {
		if len(dest) > 0 && !slices.Contains(dest, peer.p.Identity()) {
			continue
		}
		peer.sub.sendData(out, reliable)
	}
}

// sendData writes a packet on the client's subscriber data channel; a channel not open yet
// drops it.
func (b *subscriber) sendData(raw []byte, reliable bool) {
	dc := b.lossy
	if reliable {
		dc = b.reliable
	}
	if dc == nil || dc.ReadyState() != webrtc.DataChannelStateOpen {
		return
	}
	_ = dc.Send(raw)
}

// ReceiveData delivers a packet the server sends (POST /v1/rooms/{room}/data) as a user
// packet without a sender, as LiveKit's server API does.
func (s *session) ReceiveData(pkt *sfu.DataPacket) {
	topic := pkt.Topic
	out, err := proto.Marshal(&lkp.DataPacket{DestinationIdentities: pkt.Destinations, Value: &lkp.DataPacket_User{User: &lkp.UserPacket{
		Payload: pkt.Payload, Topic: &topic,
	}}})
	if err != nil {
		return
	}
	s.sub.sendData(out, !pkt.Lossy)
}
