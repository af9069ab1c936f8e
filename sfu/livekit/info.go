package livekit

import (
	lkp "github.com/livekit/protocol/livekit"

	"github.com/sluice-media/sluice/sfu"
)

// serverVersion is the LiveKit server version sessions announce: clients enable features by
// it, and 1.8 has everything this package speaks.
const serverVersion = "1.8.0"

// serverProtocol is the protocol version announced in ServerInfo. Up to 13 the client opens
// its data channels on the publisher connection right after joining, which makes the publisher
// connection the primary one and the data path always ready.
const serverProtocol = 13

// roomInfo is the LiveKit Room of r.
func roomInfo(r *sfu.Room) *lkp.Room {
	i := r.Info()
	return &lkp.Room{
		Sid: i.SID, Name: i.Name, Metadata: i.Metadata,
		CreationTime: i.CreatedAt.Unix(), CreationTimeMs: i.CreatedAt.UnixMilli(),
		NumParticipants: uint32(max(i.Participants, 0)), //nolint:gosec // a count
	}
}

// participantInfo is the LiveKit ParticipantInfo of p, its tracks included (version 0: the
// sender numbers it).
func participantInfo(p *sfu.Participant, perm *lkp.ParticipantPermission) *lkp.ParticipantInfo {
	i := p.Info()
	pi := &lkp.ParticipantInfo{
		Sid: i.SID, Identity: i.Identity, Name: i.Name, Metadata: i.Metadata,
		State:    lkp.ParticipantInfo_ACTIVE,
		JoinedAt: i.JoinedAt.Unix(), JoinedAtMs: i.JoinedAt.UnixMilli(),
		Permission: perm,
	}
	if pi.Permission == nil {
		pi.Permission = &lkp.ParticipantPermission{CanSubscribe: true, CanPublish: true, CanPublishData: true}
	}
	if i.Kind != sfu.ParticipantWebRTC {
		pi.Kind = lkp.ParticipantInfo_INGRESS // RTMP, RTSP, WHIP publishers
	}
	for _, t := range p.Tracks() {
		pi.Tracks = append(pi.Tracks, trackInfo(t))
	}
	pi.IsPublisher = len(pi.Tracks) > 0
	return pi
}

// trackInfo is the LiveKit TrackInfo of t, with the codec a browser receives it in (AAC is
// delivered as Opus, H.265 as H.264).
func trackInfo(t *sfu.Track) *lkp.TrackInfo {
	w, h := t.Size()
	ti := &lkp.TrackInfo{
		Sid: t.SID(), Name: t.Name(), Muted: t.Muted(),
		Width: uint32(max(w, 0)), Height: uint32(max(h, 0)), //nolint:gosec // sizes
		MimeType: deliveredCodec(t.Codec()).MimeType(),
		Source:   trackSource(t.Source(), t.Kind()),
	}
	if t.Kind() == sfu.KindVideo {
		ti.Type = lkp.TrackType_VIDEO
	} else {
		ti.Type = lkp.TrackType_AUDIO
	}
	return ti
}

func trackSource(source string, kind sfu.Kind) lkp.TrackSource {
	switch source {
	case sfu.SourceCamera:
		return lkp.TrackSource_CAMERA
	case sfu.SourceMicrophone:
		return lkp.TrackSource_MICROPHONE
	case sfu.SourceScreen:
		return lkp.TrackSource_SCREEN_SHARE
	case sourceScreenAudio:
		return lkp.TrackSource_SCREEN_SHARE_AUDIO
	}
	// Ingest tracks (RTMP, RTSP) are what their participant's camera and microphone are.
	if kind == sfu.KindVideo {
		return lkp.TrackSource_CAMERA
	}
	return lkp.TrackSource_MICROPHONE
}

// sourceScreenAudio is the sfu source of a LiveKit screen-share audio track.
const sourceScreenAudio = "screen_audio"

// sfuSource is the sfu source of a LiveKit track.
func sfuSource(s lkp.TrackSource, t lkp.TrackType) string {
	switch s {
	case lkp.TrackSource_CAMERA:
		return sfu.SourceCamera
	case lkp.TrackSource_MICROPHONE:
		return sfu.SourceMicrophone
	case lkp.TrackSource_SCREEN_SHARE:
		return sfu.SourceScreen
	case lkp.TrackSource_SCREEN_SHARE_AUDIO:
		return sourceScreenAudio
	default:
		if t == lkp.TrackType_VIDEO {
			return sfu.SourceCamera
		}
		return sfu.SourceMicrophone
	}
}

// browserCodecs are what every browser decodes; anything else is transcoded for them.
var browserCodecs = map[string]bool{
	sfu.CodecH264: true, sfu.CodecVP8: true, sfu.CodecVP9: true, sfu.CodecAV1: true,
	sfu.CodecOpus: true, sfu.CodecPCMU: true, sfu.CodecPCMA: true, sfu.CodecG722: true,
}

// deliveredCodec is the codec a LiveKit client receives a track of codec c in.
func deliveredCodec(c sfu.Codec) sfu.Codec {
	if browserCodecs[c.Name] {
		return c
	}
	if c.Kind() == sfu.KindVideo {
		return sfu.Codec{Name: sfu.CodecH264, ClockRate: 90000}
	}
	return sfu.Codec{Name: sfu.CodecOpus, ClockRate: 48000, Channels: 2}
}
