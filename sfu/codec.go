package sfu

import (
	"strings"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
)

// Kind is a track's media kind.
type Kind string

// Track kinds.
const (
	KindAudio Kind = "audio"
	KindVideo Kind = "video"
)

// Codec names as they appear in events and the API.
const (
	CodecH264 = "H264"
	CodecH265 = "H265"
	CodecVP8  = "VP8"
	CodecVP9  = "VP9"
	CodecAV1  = "AV1"
	CodecOpus = "opus"
	CodecAAC  = "aac"
	CodecPCMU = "pcmu"
	CodecPCMA = "pcma"
	CodecG722 = "g722"
)

// Codec describes the RTP stream of a track. Values are immutable.
type Codec struct {
	// Name is one of the Codec* names.
	Name string
	// ClockRate is the RTP clock rate in Hz.
	ClockRate uint32
	// Channels is the audio channel count (0 for video).
	Channels uint16
	// Fmtp is the SDP format parameters (RFC 4566 a=fmtp), e.g. H.264 profile-level-id or the
	// MPEG4-GENERIC config of AAC.
	Fmtp string
	// PayloadType is the RTP payload type the track's packets carry.
	PayloadType uint8
}

// Kind returns the media kind of the codec.
func (c Codec) Kind() Kind { return CodecKind(c.Name) }

// Same reports whether o is the codec c, as a reader set up for c sees it (name, clock rate).
func (c Codec) Same(o Codec) bool { return c.Name == o.Name && c.ClockRate == o.ClockRate }

// CodecKind returns the media kind of a codec name.
func CodecKind(name string) Kind {
	switch name {
	case CodecH264, CodecH265, CodecVP8, CodecVP9, CodecAV1:
		return KindVideo
	}
	return KindAudio
}

// MimeType returns the RTP MIME type ("video/H264", "audio/opus", "audio/mpeg4-generic"…).
func (c Codec) MimeType() string {
	switch c.Name {
	case CodecH264:
		return "video/H264"
	case CodecH265:
		return "video/H265"
	case CodecVP8:
		return "video/VP8"
	case CodecVP9:
		return "video/VP9"
	case CodecAV1:
		return "video/AV1"
	case CodecOpus:
		return "audio/opus"
	case CodecAAC:
		return "audio/mpeg4-generic"
	case CodecPCMU:
		return "audio/PCMU"
	case CodecPCMA:
		return "audio/PCMA"
	case CodecG722:
		return "audio/G722"
	}
	return string(c.Kind()) + "/" + c.Name
}

// CodecFromMime maps an RTP MIME type to a codec name, or "" when unknown.
func CodecFromMime(mime string) string {
	_, sub, _ := strings.Cut(strings.ToLower(mime), "/")
	switch sub {
	case "h264":
		return CodecH264
	case "h265", "hevc":
		return CodecH265
	case "vp8":
		return CodecVP8
	case "vp9":
		return CodecVP9
	case "av1":
		return CodecAV1
	case "opus":
		return CodecOpus
	case "mpeg4-generic", "mp4a-latm", "aac":
		return CodecAAC
	case "pcmu":
		return CodecPCMU
	case "pcma":
		return CodecPCMA
	case "g722":
		return CodecG722
	}
	return ""
}

// IsKeyframe reports whether an RTP payload starts a video keyframe (or carries the parameter
// sets that precede one) for the given codec. It never panics on malformed payloads.
//
// Specifications: H.264 RFC 6184, H.265 RFC 7798, VP8 RFC 7741, VP9 RFC 9628, AV1 RTP spec §4.4.
func IsKeyframe(codec string, payload []byte) bool {
	switch codec {
	case CodecH264:
		return h264Keyframe(payload)
	case CodecH265:
		return h265Keyframe(payload)
	case CodecVP8:
		return vp8Keyframe(payload)
	case CodecVP9:
		return vp9Keyframe(payload)
	case CodecAV1:
		return av1Keyframe(payload)
	}
	return false
}

func h264Keyframe(p []byte) bool {
	if len(p) < 1 {
		return false
	}
	switch typ := p[0] & 0x1f; typ {
	case 5, 7: // IDR slice, SPS
		return true
	case 24: // STAP-A: 16-bit size then NAL unit, repeated
		for i := 1; i+2 < len(p); {
			size := int(p[i])<<8 | int(p[i+1])
			i += 2
			if size == 0 || i+size > len(p) {
				return false
			}
			if t := p[i] & 0x1f; t == 5 || t == 7 {
				return true
			}
			i += size
		}
	case 28: // FU-A: start bit and the original NAL type
		return len(p) >= 2 && p[1]&0x80 != 0 && p[1]&0x1f == 5
	}
	return false
}

func h265IRAPorParams(t byte) bool { return (t >= 16 && t <= 21) || (t >= 32 && t <= 34) }

func h265Keyframe(p []byte) bool {
	if len(p) < 2 {
		return false
	}
	switch typ := (p[0] >> 1) & 0x3f; {
	case h265IRAPorParams(typ):
		return true
	case typ == 48: // aggregation packet
		for i := 2; i+2 < len(p); {
			size := int(p[i])<<8 | int(p[i+1])
			i += 2
			if size == 0 || i+size > len(p) {
				return false
			}
			if h265IRAPorParams((p[i] >> 1) & 0x3f) {
				return true
			}
			i += size
		}
	case typ == 49: // fragmentation unit
		return len(p) >= 3 && p[2]&0x80 != 0 && h265IRAPorParams(p[2]&0x3f)
	}
	return false
}

func vp8Keyframe(p []byte) bool {
	if len(p) < 1 {
		return false
	}
	x, s, pid := p[0]&0x80 != 0, p[0]&0x10 != 0, p[0]&0x07
	if !s || pid != 0 {
		return false
	}
	i := 1
	if x {
		if len(p) < 2 {
			return false
		}
		ext := p[1]
		i = 2
		if ext&0x80 != 0 { // I: picture id
			if len(p) <= i {
				return false
			}
			if p[i]&0x80 != 0 {
				i += 2
			} else {
				i++
			}
		}
		if ext&0x40 != 0 { // L: TL0PICIDX
			i++
		}
		if ext&0x30 != 0 { // T or K: TID/KEYIDX byte
			i++
		}
	}
	return len(p) > i && p[i]&0x01 == 0
}

func vp9Keyframe(p []byte) bool {
	if len(p) < 1 {
		return false
	}
	// I P L F B E V Z: not inter-predicted (P=0) and start of a frame (B=1).
	return p[0]&0x40 == 0 && p[0]&0x08 != 0
}

func av1Keyframe(p []byte) bool {
	// Aggregation header Z Y W W N - - -: N is set on the first packet of a coded video sequence.
	return len(p) >= 1 && p[0]&0x08 != 0
}

// VideoSize returns the resolution announced by the parameter set an RTP payload carries (an
// H.264 or H.265 SPS, alone or in an aggregation packet), or ok=false.
func VideoSize(codec string, payload []byte) (width, height int, ok bool) {
	switch codec {
	case CodecH264:
		for _, nalu := range rtpNALUs(payload, 1, 24, func(b byte) byte { return b & 0x1f }) {
			if len(nalu) > 0 && nalu[0]&0x1f == 7 {
				var sps h264.SPS
				if sps.Unmarshal(nalu) == nil {
					return sps.Width(), sps.Height(), true
				}
			}
		}
	case CodecH265:
		for _, nalu := range rtpNALUs(payload, 2, 48, func(b byte) byte { return (b >> 1) & 0x3f }) {
			if len(nalu) > 1 && (nalu[0]>>1)&0x3f == 33 {
				var sps h265.SPS
				if sps.Unmarshal(nalu) == nil {
					return sps.Width(), sps.Height(), true
				}
			}
		}
	}
	return 0, 0, false
}

// rtpNALUs returns the NAL units of a single-NALU or aggregation payload (headerLen is the NAL
// header size, aggType the aggregation packet type).
func rtpNALUs(p []byte, headerLen int, aggType byte, typeOf func(byte) byte) [][]byte {
	if len(p) < headerLen {
		return nil
	}
	if typeOf(p[0]) != aggType {
		return [][]byte{p}
	}
	var out [][]byte
	for i := headerLen; i+2 <= len(p); {
		size := int(p[i])<<8 | int(p[i+1])
		i += 2
		if size == 0 || i+size > len(p) {
			break
		}
		out = append(out, p[i:i+size])
		i += size
	}
	return out
}
