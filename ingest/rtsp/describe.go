package rtsp

import (
	"fmt"

	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
)

// described is one media of a play description and the codec of the track it was made from.
type described struct {
	kind  sfu.Kind
	media *description.Media
	codec sfu.Codec
}

// describe builds the SDP description of what a player of t gets: the first video and the
// first audio track of the source participant. On failure it returns the response to send.
func (s *Server) describe(t target) (*description.Session, []described, *base.Response, error) {
	room := s.opts.Hub.Room(t.room)
	if room == nil {
		return nil, nil, &base.Response{StatusCode: base.StatusNotFound}, fmt.Errorf("room %q not found", t.room)
	}
	sel := sfu.Selector{Identity: t.identity}
	source := sel.Participant(room)
	if source == nil {
		return nil, nil, &base.Response{StatusCode: base.StatusNotFound}, fmt.Errorf("no publisher to play in room %q", t.room)
	}
	desc := &description.Session{Title: "sluice " + t.room}
	var medias []described
	for _, kind := range []sfu.Kind{sfu.KindVideo, sfu.KindAudio} { // in SDP order, like WHEP
		sel.Kind = kind
		tracks := sel.Tracks(source)
		if len(tracks) == 0 {
			continue
		}
		tr := tracks[0]
		f, err := playFormat(tr.Codec(), uint8(96+len(desc.Medias)))
		if err != nil {
			s.log.Info("rtsp play: track left out", "room", t.room, "codec", tr.Codec().Name, "reason", err)
			continue
		}
		typ := description.MediaTypeVideo
		if kind == sfu.KindAudio {
			typ = description.MediaTypeAudio
		}
		m := &description.Media{Type: typ, Control: fmt.Sprintf("trackID=%d", len(desc.Medias)), Formats: []format.Format{f}}
		desc.Medias = append(desc.Medias, m)
		medias = append(medias, described{kind: kind, media: m, codec: tr.Codec()})
	}
	if len(desc.Medias) == 0 {
		return nil, nil, &base.Response{StatusCode: base.StatusNotFound}, fmt.Errorf("the publisher in room %q has no track RTSP can carry", t.room)
	}
	return desc, medias, nil, nil
}

// playFormat describes an sfu codec for RTSP play. dynPT is the payload type used when the
// codec has no static one. The packets of the track are sent as they are, so the format must
// match how sluice packetizes them (media.Writer, or the source for pass-through codecs).
func playFormat(c sfu.Codec, dynPT uint8) (format.Format, error) {
	switch c.Name {
	case sfu.CodecH264:
		f := &format.H264{PayloadTyp: dynPT, PacketizationMode: 1}
		f.SPS, f.PPS = media.H264Sprop(c.Fmtp)
		return f, nil
	case sfu.CodecH265:
		f := &format.H265{PayloadTyp: dynPT}
		f.VPS, f.SPS, f.PPS = media.H265Sprop(c.Fmtp)
		return f, nil
	case sfu.CodecVP8:
		return &format.VP8{PayloadTyp: dynPT}, nil
	case sfu.CodecVP9:
		return &format.VP9{PayloadTyp: dynPT}, nil
	case sfu.CodecAV1:
		return &format.AV1{PayloadTyp: dynPT}, nil
	case sfu.CodecAAC:
		a, err := media.ParseAAC(c)
		if err != nil {
			return nil, err
		}
		return &format.MPEG4Audio{PayloadTyp: dynPT, ProfileLevelID: 1, Config: &a.Config,
			SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3}, nil
	case sfu.CodecPCMU, sfu.CodecPCMA:
		pt := dynPT
		if c.ClockRate == 8000 && c.Channels <= 1 {
			pt = 0 // RFC 3551 static payload types: PCMU 0, PCMA 8
			if c.Name == sfu.CodecPCMA {
				pt = 8
			}
		}
		return &format.G711{PayloadTyp: pt, MULaw: c.Name == sfu.CodecPCMU, SampleRate: int(c.ClockRate), ChannelCount: max(int(c.Channels), 1)}, nil
	case sfu.CodecG722:
		return &format.G722{}, nil
	case sfu.CodecOpus:
		return &format.Opus{PayloadTyp: dynPT, ChannelCount: 2}, nil
	}
	return nil, fmt.Errorf("codec %s cannot be played over RTSP", c.Name)
}
