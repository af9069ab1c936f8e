package media

import (
	"errors"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/vp9"
	"github.com/pion/rtp"

	"github.com/sluice-media/sluice/sfu"
)

// Frame is one access unit of a track read back from its RTP packets: a video access unit or
// temporal unit, or an audio frame. Its slices are valid until the Reader is called again.
type Frame struct {
	// PTS and DTS are the presentation and decode times in extended RTP ticks (the caller's
	// unwrapped timestamps). They differ only for H.264/H.265 with B-frames.
	PTS, DTS int64
	// Key marks a video frame a decoder may start at (always true for audio).
	Key bool
	// Data is the frame as MP4, Matroska and FLV store it: H.264/H.265 NAL units each preceded
	// by its 4-byte length (AVCC), AV1 OBUs with their sizes (low-overhead bitstream), VP8, VP9,
	// Opus and AAC frames as they are, G.711 as 16-bit big-endian linear PCM.
	Data []byte
	// NALUs are H.264/H.265 NAL units of Data without their length prefixes (nil otherwise).
	// Access unit delimiters and filler data are dropped.
	NALUs [][]byte
	// Dur is the frame's duration in ticks when the codec says it (audio), else 0.
	Dur int64
}

// Params are the codec parameters a container's header needs beyond the codec name, learned
// from the fmtp and the stream (in-band parameter sets, sequence headers, keyframe headers).
// Its slices are never modified once handed out: a change replaces them.
type Params struct {
	SPS, PPS, VPS     []byte // H.264 / H.265 parameter sets
	AV1SequenceHeader []byte
	VP9               *vp9.Header
	AAC               *mpeg4audio.AudioSpecificConfig
	Width, Height     int
	Channels          int
	SampleRate        int
	SamplesPerUnit    int // AAC samples per access unit
}

// Ready reports whether the parameters a container header of codec needs are known.
func (p Params) Ready(codec string) bool {
	switch codec {
	case sfu.CodecH264:
		return len(p.SPS) > 0 && len(p.PPS) > 0
	case sfu.CodecH265:
		return len(p.SPS) > 0 && len(p.PPS) > 0 && len(p.VPS) > 0
	case sfu.CodecAV1:
		return len(p.AV1SequenceHeader) > 0
	case sfu.CodecVP9:
		return p.VP9 != nil
	case sfu.CodecAAC:
		return p.AAC != nil
	}
	return true
}

// Reader turns the RTP packets of one track back into frames. It is owned by one goroutine. It
// never panics on malformed input: it reports it and waits for the next frame start (a
// keyframe for video, which is also where it starts and where it resumes after a loss).
type Reader interface {
	// Push consumes one packet whose extended (unwrapped) timestamp is ext; lost reports missing
	// packets before it. emit is called for each complete frame. It returns false when the
	// packet was malformed.
	Push(p *sfu.Packet, ext int64, lost bool, emit func(*Frame)) bool
	// Params returns the codec parameters known so far; changed reports a change since the
	// previous call.
	Params() (p Params, changed bool)
	// Flush hands out the frames still held to compute decode times (the source ended).
	Flush(emit func(*Frame))
}

// ErrNoReader is returned for a codec without a Reader.
var ErrNoReader = errors.New("codec not supported by the frame reader")

// NewReader returns the reader of a codec, with the parameters its fmtp carries (H.264/H.265
// sprop parameter sets, the AAC config).
func NewReader(c sfu.Codec) (Reader, error) {
	switch c.Name {
	case sfu.CodecH264, sfu.CodecH265:
		return newH26xReader(c), nil
	case sfu.CodecVP8:
		return newVP8Reader()
	case sfu.CodecVP9:
		return newVP9Reader()
	case sfu.CodecAV1:
		return newAV1Reader()
	case sfu.CodecOpus:
		return &opusReader{params: Params{Channels: channels(c, 2), SampleRate: 48000}}, nil
	case sfu.CodecAAC:
		return newAACReader(c)
	case sfu.CodecPCMU, sfu.CodecPCMA:
		return &g711Reader{alaw: c.Name == sfu.CodecPCMA, params: Params{Channels: channels(c, 1), SampleRate: int(c.ClockRate)}}, nil
	}
	return nil, ErrNoReader
}

func channels(c sfu.Codec, def int) int {
	if c.Channels == 0 {
		return def
	}
	return int(c.Channels)
}

// learnedParams is embedded by readers that learn their parameters from the stream.
type learnedParams struct {
	params  Params
	changed bool
}

func (l *learnedParams) Params() (Params, bool) {
	c := l.changed
	l.changed = false
	return l.params, c
}

// noHold is embedded by readers that hold no frames.
type noHold struct{}

func (noHold) Flush(func(*Frame)) {}

// rtpPacket builds the gortsplib decoders' input; they keep nothing of it.
func rtpPacket(p *sfu.Packet) *rtp.Packet {
	return &rtp.Packet{Header: p.Header, Payload: p.Payload}
}

// malformed separates "more packets needed" from real errors of the gortsplib decoders.
func malformed(err error, more ...error) bool {
	for _, m := range more {
		if errors.Is(err, m) {
			return false
		}
	}
	return true
}
