package rtmpproto

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/sluice-media/sluice/sfu"
)

// The payload of an RTMP audio or video message is an FLV tag body without the tag header:
// Adobe FLV spec v10.1 §E.4.2.1 (AUDIODATA) and §E.4.3.1 (VIDEODATA), extended by Enhanced
// RTMP (veovera enhanced-rtmp v1 and v2: ExVideoTagHeader, ExAudioTagHeader, FourCC codecs).
// The parsers below only slice their input: nothing is copied or kept.

// PacketKind says what a media tag carries.
type PacketKind uint8

// The kinds of packet.
const (
	PacketFrame         PacketKind = iota // coded frame(s)
	PacketSequenceStart                   // codec configuration (decoder configuration record)
	PacketSequenceEnd                     // end of sequence
	PacketOther                           // metadata, command frames, multitrack…: ignored
)

// FLV codec ids, frame types and AVC/AAC packet types (FLV spec §E.4.2.1, §E.4.3.1), and the
// packet types of Enhanced RTMP (ExVideoTagHeader, ExAudioTagHeader).
const (
	FLVVideoAVC      = 7
	FLVVideoHEVC     = 12 // not in the FLV spec, but sent by several encoders and servers
	FLVAudioAAC      = 10
	FLVAudioExHeader = 9 // Enhanced RTMP v2: ExAudioTagHeader follows

	FrameKey     = 1
	FrameInter   = 2
	FrameCommand = 5

	AVCSequenceStart = 0 // also AAC's sequence header
	AVCNALU          = 1 // also AAC's raw frame
	AVCSequenceEnd   = 2

	ExSequenceStart = 0
	ExCodedFrames   = 1
	ExSequenceEnd   = 2
	ExCodedFramesX  = 3 // video: coded frames without a composition time
	ExMetadata      = 4
	ExAudioMultitr  = 5
	ExVideoMultitr  = 6
	ExModEx         = 7

	aacTagByte = FLVAudioAAC<<4 | 0x0f // AAC, 44 kHz, 16-bit, stereo: what the spec mandates for AAC
)

// VideoTag is a parsed video message.
type VideoTag struct {
	Codec    string // sfu codec name; "" when unsupported
	Format   string // how the publisher named the codec, for logs ("avc", "hvc1", "flv codec 2")
	Kind     PacketKind
	Keyframe bool
	CTS      int32  // composition time offset in milliseconds (PTS = DTS + cts)
	Data     []byte // configuration record (sequence start) or the frame
}

// ParseVideoTag parses the body of an RTMP video message.
func ParseVideoTag(b []byte) (VideoTag, error) {
	if len(b) < 1 {
		return VideoTag{}, malformed("empty video tag")
	}
	if b[0]&0x80 == 0 {
		return parseLegacyVideo(b)
	}
	var t VideoTag
	frameType := (b[0] >> 4) & 0x07
	pkt := b[0] & 0x0f
	b = b[1:]
	pkt, b, err := skipModEx(pkt, b)
	if err != nil {
		return t, err
	}
	t.Keyframe = frameType == FrameKey
	if frameType == FrameCommand && pkt != ExMetadata {
		t.Kind, t.Format = PacketOther, "video command"
		return t, nil
	}
	if pkt == ExVideoMultitr {
		t.Kind, t.Format = PacketOther, "multitrack"
		return t, nil
	}
	if len(b) < 4 {
		return t, malformed("enhanced video tag without a FourCC")
	}
	fourCC := string(b[:4])
	b = b[4:]
	t.Format = fourCC
	switch fourCC {
	case "avc1":
		t.Codec = sfu.CodecH264
	case "hvc1":
		t.Codec = sfu.CodecH265
	case "av01":
		t.Codec = sfu.CodecAV1
	case "vp09":
		t.Codec = sfu.CodecVP9
	}
	switch pkt {
	case ExSequenceStart:
		t.Kind, t.Data = PacketSequenceStart, b
	case ExCodedFrames:
		if fourCC == "avc1" || fourCC == "hvc1" {
			if len(b) < 3 {
				return t, malformed("%s frame without a composition time", fourCC)
			}
			t.CTS, b = si24(b), b[3:]
		}
		t.Kind, t.Data = PacketFrame, b
	case ExCodedFramesX:
		t.Kind, t.Data = PacketFrame, b
	case ExSequenceEnd:
		t.Kind = PacketSequenceEnd
	default: // metadata (HDR colour info), MPEG-2 TS sequence start, reserved
		t.Kind = PacketOther
	}
	return t, nil
}

func parseLegacyVideo(b []byte) (VideoTag, error) {
	t := VideoTag{Keyframe: b[0]>>4 == FrameKey}
	frameType, id := b[0]>>4, b[0]&0x0f
	switch id {
	case FLVVideoAVC:
		t.Codec, t.Format = sfu.CodecH264, "avc"
	case FLVVideoHEVC:
		t.Codec, t.Format = sfu.CodecH265, "hevc (flv codec 12)"
	default:
		t.Format = fmt.Sprintf("flv video codec %d", id)
		t.Kind, t.Data = PacketFrame, b[1:]
		return t, nil
	}
	if frameType == FrameCommand {
		t.Kind = PacketOther
		return t, nil
	}
	if len(b) < 5 {
		return t, malformed("%s tag shorter than its 5-byte header", t.Format)
	}
	t.CTS = si24(b[2:5])
	switch b[1] {
	case AVCSequenceStart:
		t.Kind = PacketSequenceStart
	case AVCNALU:
		t.Kind = PacketFrame
	case AVCSequenceEnd:
		t.Kind = PacketSequenceEnd
	default:
		return t, malformed("%s packet type %d", t.Format, b[1])
	}
	t.Data = b[5:]
	return t, nil
}

// skipModEx skips the ModEx headers of Enhanced RTMP v2 (e.g. a nanosecond timestamp offset)
// and returns the packet type that follows them.
func skipModEx(pkt byte, b []byte) (byte, []byte, error) {
	for n := 0; pkt == ExModEx; n++ {
		if n == 8 {
			return 0, nil, malformed("too many ModEx headers")
		}
		if len(b) < 1 {
			return 0, nil, malformed("truncated ModEx header")
		}
		size := int(b[0]) + 1
		b = b[1:]
		if size == 256 {
			if len(b) < 2 {
				return 0, nil, malformed("truncated ModEx header")
			}
			size = int(binary.BigEndian.Uint16(b)) + 1
			b = b[2:]
		}
		if len(b) < size+1 {
			return 0, nil, malformed("truncated ModEx data")
		}
		pkt = b[size] & 0x0f
		b = b[size+1:]
	}
	return pkt, b, nil
}

// si24 reads a signed 24-bit big-endian integer.
func si24(b []byte) int32 {
	return int32(uint32(b[0])<<24|uint32(b[1])<<16|uint32(b[2])<<8) >> 8
}

// AudioTag is a parsed audio message.
type AudioTag struct {
	Codec  string // sfu codec name; "" when unsupported
	Format string
	Kind   PacketKind
	Data   []byte // AudioSpecificConfig / OpusHead (sequence start) or one coded frame
}

// ParseAudioTag parses the body of an RTMP audio message.
func ParseAudioTag(b []byte) (AudioTag, error) {
	if len(b) < 1 {
		return AudioTag{}, malformed("empty audio tag")
	}
	format := b[0] >> 4
	switch format {
	case FLVAudioAAC:
		if len(b) < 2 {
			return AudioTag{}, malformed("aac tag shorter than its 2-byte header")
		}
		t := AudioTag{Codec: sfu.CodecAAC, Format: "aac", Data: b[2:]}
		switch b[1] {
		case AVCSequenceStart:
			t.Kind = PacketSequenceStart
		case AVCNALU:
			t.Kind = PacketFrame
		default:
			return t, malformed("aac packet type %d", b[1])
		}
		return t, nil
	case FLVAudioExHeader:
		return parseExAudio(b)
	}
	return AudioTag{Format: fmt.Sprintf("flv audio format %d", format), Kind: PacketFrame, Data: b[1:]}, nil
}

func parseExAudio(b []byte) (AudioTag, error) {
	var t AudioTag
	pkt, b, err := skipModEx(b[0]&0x0f, b[1:])
	if err != nil {
		return t, err
	}
	if pkt == ExAudioMultitr {
		t.Kind, t.Format = PacketOther, "multitrack"
		return t, nil
	}
	if len(b) < 4 {
		return t, malformed("enhanced audio tag without a FourCC")
	}
	t.Format = string(b[:4])
	switch t.Format {
	case "mp4a":
		t.Codec = sfu.CodecAAC
	case "Opus":
		t.Codec = sfu.CodecOpus
	}
	b = b[4:]
	switch pkt {
	case ExSequenceStart:
		t.Kind, t.Data = PacketSequenceStart, b
	case ExCodedFrames:
		t.Kind, t.Data = PacketFrame, b
	case ExSequenceEnd:
		t.Kind = PacketSequenceEnd
	default: // multichannel configuration, reserved
		t.Kind = PacketOther
	}
	return t, nil
}

// MaxNALUs bounds the NAL units of one access unit (a slice per macroblock row of 8K video is
// far below it).
const MaxNALUs = 1024

// SplitNALUs appends to dst the NAL units of a length-prefixed access unit (ISO 14496-15 §5.3)
// as subslices of au. Empty NAL units are skipped.
func SplitNALUs(dst [][]byte, au []byte, lengthSize int) ([][]byte, error) {
	if lengthSize < 1 || lengthSize > 4 {
		return dst, malformed("nal unit length size %d", lengthSize)
	}
	for len(au) > 0 {
		if len(au) < lengthSize {
			return dst, malformed("truncated nal unit length")
		}
		var n uint64
		for _, c := range au[:lengthSize] {
			n = n<<8 | uint64(c)
		}
		au = au[lengthSize:]
		if n > uint64(len(au)) {
			return dst, malformed("nal unit of %d bytes in %d remaining", n, len(au))
		}
		if n > 0 {
			if len(dst) == MaxNALUs {
				return dst, malformed("more than %d nal units in one frame", MaxNALUs)
			}
			dst = append(dst, au[:n])
		}
		au = au[n:]
	}
	return dst, nil
}

// CodecConfig is an AVCDecoderConfigurationRecord (ISO 14496-15 §5.2.4.1) or an
// HEVCDecoderConfigurationRecord (§8.3.3.1): the parameter sets and the NAL unit length size.
type CodecConfig struct {
	Params     [][]byte // H.264: SPS…, PPS…; H.265: VPS…, SPS…, PPS… (subslices of the input)
	LengthSize int
}

// MaxParamSets bounds the parameter sets of a configuration record.
const MaxParamSets = 64

// ParseAVCC parses an AVCDecoderConfigurationRecord.
func ParseAVCC(b []byte) (CodecConfig, error) {
	var c CodecConfig
	if err := checkRecord(b, 7, "avc"); err != nil {
		return c, err
	}
	c.LengthSize = int(b[4]&0x03) + 1
	n, b := int(b[5]&0x1f), b[6:]
	sps, b, err := readParamSets(b, n, nil)
	if err != nil {
		return c, err
	}
	if len(b) < 1 {
		return c, malformed("avc configuration record without a pps count")
	}
	n, b = int(b[0]), b[1:]
	c.Params, _, err = readParamSets(b, n, sps)
	if err != nil {
		return c, err
	}
	var haveSPS, havePPS bool
	for _, p := range c.Params {
		switch p[0] & 0x1f {
		case 7:
			haveSPS = true
		case 8:
			havePPS = true
		}
	}
	if !haveSPS || !havePPS {
		return c, malformed("avc configuration record without sps and pps")
	}
	return c, nil
}

// ParseHVCC parses an HEVCDecoderConfigurationRecord, keeping its VPS, SPS and PPS.
func ParseHVCC(b []byte) (CodecConfig, error) {
	var c CodecConfig
	if err := checkRecord(b, 23, "hevc"); err != nil {
		return c, err
	}
	c.LengthSize = int(b[21]&0x03) + 1
	arrays, b := int(b[22]), b[23:]
	var vps, sps, pps [][]byte
	for range arrays {
		if len(b) < 3 {
			return c, malformed("truncated hevc nal unit array")
		}
		typ, n := b[0]&0x3f, int(binary.BigEndian.Uint16(b[1:3]))
		var sets [][]byte
		var err error
		sets, b, err = readParamSets(b[3:], n, nil)
		if err != nil {
			return c, err
		}
		switch typ {
		case 32:
			vps = append(vps, sets...)
		case 33:
			sps = append(sps, sets...)
		case 34:
			pps = append(pps, sets...)
		}
		if len(vps)+len(sps)+len(pps) > MaxParamSets {
			return c, malformed("more than %d parameter sets", MaxParamSets)
		}
	}
	if len(vps) == 0 || len(sps) == 0 || len(pps) == 0 {
		return c, malformed("hevc configuration record without vps, sps and pps")
	}
	c.Params = append(append(vps, sps...), pps...)
	return c, nil
}

// checkRecord checks the size and the version (1) of a configuration record.
func checkRecord(b []byte, size int, name string) error {
	if len(b) < size {
		return malformed("%s configuration record of %d bytes", name, len(b))
	}
	if b[0] != 1 {
		return malformed("%s configuration version %d", name, b[0])
	}
	return nil
}

// readParamSets reads n 16-bit-length-prefixed NAL units, appending them to dst.
func readParamSets(b []byte, n int, dst [][]byte) ([][]byte, []byte, error) {
	if len(dst)+n > MaxParamSets {
		return nil, nil, malformed("more than %d parameter sets", MaxParamSets)
	}
	for range n {
		if len(b) < 2 {
			return nil, nil, malformed("truncated parameter set length")
		}
		size := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		if size == 0 || size > len(b) {
			return nil, nil, malformed("parameter set of %d bytes in %d remaining", size, len(b))
		}
		dst = append(dst, b[:size])
		b = b[size:]
	}
	return dst, b, nil
}

// ParseAV1C returns the configuration OBUs (the sequence header) of an
// AV1CodecConfigurationRecord (AV1 ISOBMFF binding §2.3.3).
func ParseAV1C(b []byte) ([]byte, error) {
	if len(b) < 4 {
		return nil, malformed("av1 configuration record of %d bytes", len(b))
	}
	if b[0] != 0x81 {
		return nil, malformed("av1 configuration marker/version 0x%02x", b[0])
	}
	return b[4:], nil
}

// SplitOBUs appends to dst the OBUs of an AV1 temporal unit in the low-overhead bitstream
// format (AV1 spec §5.2), each rewritten without its obu_size field as RTP wants it (AV1 RTP
// spec §4.3); it allocates one buffer for the rewritten OBUs. Temporal delimiters, which RTP
// does not carry, are dropped.
func SplitOBUs(dst [][]byte, tu []byte) ([][]byte, error) {
	out := make([]byte, 0, len(tu))
	for len(tu) > 0 {
		h := tu[0]
		if h&0x80 != 0 {
			return dst, malformed("av1 obu forbidden bit set")
		}
		typ, ext, hasSize := (h>>3)&0x0f, h&0x04 != 0, h&0x02 != 0
		hdr := 1
		if ext {
			hdr = 2
		}
		if len(tu) < hdr {
			return dst, malformed("truncated av1 obu header")
		}
		size, n := uint64(len(tu)-hdr), 0
		if hasSize {
			var err error
			size, n, err = leb128(tu[hdr:])
			if err != nil {
				return dst, err
			}
			if size > uint64(len(tu)-hdr-n) {
				return dst, malformed("av1 obu of %d bytes in %d remaining", size, len(tu)-hdr-n)
			}
		}
		body := tu[hdr+n : hdr+n+int(size)]
		if typ != 2 { // OBU_TEMPORAL_DELIMITER
			if len(dst) == MaxNALUs {
				return dst, malformed("more than %d obus in one temporal unit", MaxNALUs)
			}
			start := len(out)
			out = append(out, h&^0x02)
			if ext {
				out = append(out, tu[1])
			}
			out = append(out, body...)
			dst = append(dst, out[start:len(out):len(out)])
		}
		tu = tu[hdr+n+int(size):]
	}
	return dst, nil
}

// leb128 reads an unsigned LEB128 value of at most 8 bytes (AV1 spec §4.10.5).
func leb128(b []byte) (uint64, int, error) {
	var v uint64
	for i := 0; i < 8; i++ {
		if i >= len(b) {
			return 0, 0, malformed("truncated leb128")
		}
		v |= uint64(b[i]&0x7f) << (7 * i)
		if b[i]&0x80 == 0 {
			return v, i + 1, nil
		}
	}
	return 0, 0, malformed("leb128 longer than 8 bytes")
}

// ErrParams is returned for parameter sets an AVC sequence header cannot be built from.
var ErrParams = errors.New("h264 parameter sets cannot make a sequence header")

// AVCSequenceHeader returns the body of an AVC sequence header tag: an
// AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1) with one SPS and one PPS and
// 4-byte NAL unit lengths, with the chroma and bit depth fields of the High profiles.
func AVCSequenceHeader(sps, pps []byte) ([]byte, error) {
	if len(sps) < 4 || len(pps) < 1 || len(sps) > 0xffff || len(pps) > 0xffff || sps[0]&0x1f != 7 || pps[0]&0x1f != 8 {
		return nil, ErrParams
	}
	var s h264.SPS
	if err := s.Unmarshal(sps); err != nil {
		return nil, errors.Join(ErrParams, err)
	}
	b := make([]byte, 0, 5+11+len(sps)+3+len(pps)+4)
	b = append(b, FrameKey<<4|FLVVideoAVC, AVCSequenceStart, 0, 0, 0)
	b = append(b, 1, sps[1], sps[2], sps[3], 0xff, 0xe1) // version, profile, compat, level, lengthSize 4, 1 SPS
	b = binary.BigEndian.AppendUint16(b, uint16(len(sps)))
	b = append(b, sps...)
	b = append(b, 1)
	b = binary.BigEndian.AppendUint16(b, uint16(len(pps)))
	b = append(b, pps...)
	switch s.ProfileIdc {
	case 100, 110, 122, 144:
		b = append(b, 0xfc|byte(s.ChromaFormatIdc&3), 0xf8|byte(s.BitDepthLumaMinus8&7), 0xf8|byte(s.BitDepthChromaMinus8&7), 0)
	}
	return b, nil
}

// AVCFrameHeader is the start of the body of an AVC NALU tag, before the access unit in AVCC
// form (4-byte length-prefixed NAL units, media.Frame.Data): frame type, packet type and the
// composition time offset (PTS - DTS) in milliseconds.
func AVCFrameHeader(keyframe bool, cts int32) [5]byte {
	frame := byte(FrameInter)
	if keyframe {
		frame = FrameKey
	}
	return [5]byte{frame<<4 | FLVVideoAVC, AVCNALU, byte(cts >> 16), byte(cts >> 8), byte(cts)}
}

// AppendAVCFrame appends the body of an AVC NALU tag: AVCFrameHeader, then the AVCC access unit.
func AppendAVCFrame(dst []byte, keyframe bool, cts int32, avcc []byte) []byte {
	h := AVCFrameHeader(keyframe, cts)
	return append(append(dst, h[:]...), avcc...)
}

// AVCEndOfSequence returns the body of the AVC end-of-sequence tag sent before unpublishing.
func AVCEndOfSequence() []byte {
	return []byte{FrameKey<<4 | FLVVideoAVC, AVCSequenceEnd, 0, 0, 0}
}

// AACSequenceHeader returns the body of an AAC sequence header tag carrying an
// AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1).
func AACSequenceHeader(asc []byte) []byte {
	return append([]byte{aacTagByte, AVCSequenceStart}, asc...)
}

// AACFrameHeader is the start of the body of an AAC raw tag, before one access unit.
func AACFrameHeader() [2]byte { return [2]byte{aacTagByte, AVCNALU} }

// AppendAACFrame appends the body of an AAC raw tag: one access unit.
func AppendAACFrame(dst []byte, au []byte) []byte {
	return append(append(dst, aacTagByte, AVCNALU), au...)
}
