package rtmp

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/sluice-media/sluice/sfu"
)

// The payload of an RTMP audio or video message is an FLV tag body without the tag header:
// Adobe FLV spec v10.1 §E.4.2.1 (AUDIODATA) and §E.4.3.1 (VIDEODATA), extended by Enhanced
// RTMP (veovera enhanced-rtmp v1 and v2: ExVideoTagHeader, ExAudioTagHeader, FourCC codecs).
// The parsers below only slice their input: nothing is copied or kept.

// errMalformed reports an FLV tag or codec configuration that cannot be parsed.
var errMalformed = errors.New("malformed media")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errMalformed}, args...)...)
}

// packetKind says what a media tag carries.
type packetKind uint8

const (
	packetFrame         packetKind = iota // coded frame(s)
	packetSequenceStart                   // codec configuration (decoder configuration record)
	packetSequenceEnd                     // end of sequence
	packetOther                           // metadata, command frames, multitrack…: ignored
)

// Legacy FLV codec ids and Enhanced RTMP packet types.
const (
	flvVideoAVC      = 7
	flvVideoHEVC     = 12 // not in the FLV spec, but sent by several encoders and servers
	flvAudioAAC      = 10
	flvAudioExHeader = 9 // Enhanced RTMP v2: ExAudioTagHeader follows

	exSequenceStart = 0
	exCodedFrames   = 1
	exSequenceEnd   = 2
	exCodedFramesX  = 3 // video: coded frames without a composition time
	exMetadata      = 4
	exVideoMultitr  = 6
	exAudioMultitr  = 5
	exModEx         = 7

	frameTypeKey     = 1
	frameTypeCommand = 5
)

// videoTag is a parsed video message.
type videoTag struct {
	codec    string // sfu codec name; "" when unsupported
	format   string // how the publisher named the codec, for logs ("avc", "hvc1", "flv codec 2")
	kind     packetKind
	keyframe bool
	cts      int32  // composition time offset in milliseconds (PTS = DTS + cts)
	data     []byte // configuration record (sequence start) or the frame
}

// parseVideoTag parses the body of an RTMP video message.
func parseVideoTag(b []byte) (videoTag, error) {
	if len(b) < 1 {
		return videoTag{}, malformed("empty video tag")
	}
	if b[0]&0x80 == 0 {
		return parseLegacyVideo(b)
	}
	var t videoTag
	frameType := (b[0] >> 4) & 0x07
	pkt := b[0] & 0x0f
	b = b[1:]
	pkt, b, err := skipModEx(pkt, b)
	if err != nil {
		return t, err
	}
	t.keyframe = frameType == frameTypeKey
	if frameType == frameTypeCommand && pkt != exMetadata {
		t.kind, t.format = packetOther, "video command"
		return t, nil
	}
	if pkt == exVideoMultitr {
		t.kind, t.format = packetOther, "multitrack"
		return t, nil
	}
	if len(b) < 4 {
		return t, malformed("enhanced video tag without a FourCC")
	}
	fourCC := string(b[:4])
	b = b[4:]
	t.format = fourCC
	switch fourCC {
	case "avc1":
		t.codec = sfu.CodecH264
	case "hvc1":
		t.codec = sfu.CodecH265
	case "av01":
		t.codec = sfu.CodecAV1
	case "vp09":
		t.codec = sfu.CodecVP9
	}
	switch pkt {
	case exSequenceStart:
		t.kind, t.data = packetSequenceStart, b
	case exCodedFrames:
		if fourCC == "avc1" || fourCC == "hvc1" {
			if len(b) < 3 {
				return t, malformed("%s frame without a composition time", fourCC)
			}
			t.cts, b = si24(b), b[3:]
		}
		t.kind, t.data = packetFrame, b
	case exCodedFramesX:
		t.kind, t.data = packetFrame, b
	case exSequenceEnd:
		t.kind = packetSequenceEnd
	default: // metadata (HDR colour info), MPEG-2 TS sequence start, reserved
		t.kind = packetOther
	}
	return t, nil
}

func parseLegacyVideo(b []byte) (videoTag, error) {
	t := videoTag{keyframe: b[0]>>4 == frameTypeKey}
	frameType, id := b[0]>>4, b[0]&0x0f
	switch id {
	case flvVideoAVC:
		t.codec, t.format = sfu.CodecH264, "avc"
	case flvVideoHEVC:
		t.codec, t.format = sfu.CodecH265, "hevc (flv codec 12)"
	default:
		t.format = fmt.Sprintf("flv video codec %d", id)
		t.kind, t.data = packetFrame, b[1:]
		return t, nil
	}
	if frameType == frameTypeCommand {
		t.kind = packetOther
		return t, nil
	}
	if len(b) < 5 {
		return t, malformed("%s tag shorter than its 5-byte header", t.format)
	}
	t.cts = si24(b[2:5])
	switch b[1] {
	case 0:
		t.kind = packetSequenceStart
	case 1:
		t.kind = packetFrame
	case 2:
		t.kind = packetSequenceEnd
	default:
		return t, malformed("%s packet type %d", t.format, b[1])
	}
	t.data = b[5:]
	return t, nil
}

// skipModEx skips the ModEx headers of Enhanced RTMP v2 (e.g. a nanosecond timestamp offset)
// and returns the packet type that follows them.
func skipModEx(pkt byte, b []byte) (byte, []byte, error) {
	for n := 0; pkt == exModEx; n++ {
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

// audioTag is a parsed audio message.
type audioTag struct {
	codec  string // sfu codec name; "" when unsupported
	format string
	kind   packetKind
	data   []byte // AudioSpecificConfig / OpusHead (sequence start) or one coded frame
}

// parseAudioTag parses the body of an RTMP audio message.
func parseAudioTag(b []byte) (audioTag, error) {
	if len(b) < 1 {
		return audioTag{}, malformed("empty audio tag")
	}
	format := b[0] >> 4
	switch format {
	case flvAudioAAC:
		if len(b) < 2 {
			return audioTag{}, malformed("aac tag shorter than its 2-byte header")
		}
		t := audioTag{codec: sfu.CodecAAC, format: "aac", data: b[2:]}
		switch b[1] {
		case 0:
			t.kind = packetSequenceStart
		case 1:
			t.kind = packetFrame
		default:
			return t, malformed("aac packet type %d", b[1])
		}
		return t, nil
	case flvAudioExHeader:
		return parseExAudio(b)
	}
	return audioTag{format: fmt.Sprintf("flv audio format %d", format), kind: packetFrame, data: b[1:]}, nil
}

func parseExAudio(b []byte) (audioTag, error) {
	var t audioTag
	pkt, b, err := skipModEx(b[0]&0x0f, b[1:])
	if err != nil {
		return t, err
	}
	if pkt == exAudioMultitr {
		t.kind, t.format = packetOther, "multitrack"
		return t, nil
	}
	if len(b) < 4 {
		return t, malformed("enhanced audio tag without a FourCC")
	}
	t.format = string(b[:4])
	switch t.format {
	case "mp4a":
		t.codec = sfu.CodecAAC
	case "Opus":
		t.codec = sfu.CodecOpus
	}
	b = b[4:]
	switch pkt {
	case exSequenceStart:
		t.kind, t.data = packetSequenceStart, b
	case exCodedFrames:
		t.kind, t.data = packetFrame, b
	case exSequenceEnd:
		t.kind = packetSequenceEnd
	default: // multichannel configuration, reserved
		t.kind = packetOther
	}
	return t, nil
}

// maxNALUs bounds the NAL units of one access unit (a slice per macroblock row of 8K video is
// far below it).
const maxNALUs = 1024

// splitNALUs appends to dst the NAL units of a length-prefixed access unit (ISO 14496-15 §5.3)
// as subslices of au. Empty NAL units are skipped.
func splitNALUs(dst [][]byte, au []byte, lengthSize int) ([][]byte, error) {
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
			if len(dst) == maxNALUs {
				return dst, malformed("more than %d nal units in one frame", maxNALUs)
			}
			dst = append(dst, au[:n])
		}
		au = au[n:]
	}
	return dst, nil
}

// avcConfig is an AVCDecoderConfigurationRecord (ISO 14496-15 §5.2.4.1) or an
// HEVCDecoderConfigurationRecord (§8.3.3.1): the parameter sets and the NAL unit length size.
type avcConfig struct {
	params     [][]byte // H.264: SPS…, PPS…; H.265: VPS…, SPS…, PPS… (subslices of the input)
	lengthSize int
}

// maxParamSets bounds the parameter sets of a configuration record.
const maxParamSets = 64

// parseAVCC parses an AVCDecoderConfigurationRecord.
func parseAVCC(b []byte) (avcConfig, error) {
	var c avcConfig
	if len(b) < 7 {
		return c, malformed("avc configuration record of %d bytes", len(b))
	}
	if b[0] != 1 {
		return c, malformed("avc configuration version %d", b[0])
	}
	c.lengthSize = int(b[4]&0x03) + 1
	n, b := int(b[5]&0x1f), b[6:]
	sps, b, err := readParamSets(b, n, nil)
	if err != nil {
		return c, err
	}
	if len(b) < 1 {
		return c, malformed("avc configuration record without a pps count")
	}
	n, b = int(b[0]), b[1:]
	c.params, _, err = readParamSets(b, n, sps)
	if err != nil {
		return c, err
	}
	var haveSPS, havePPS bool
	for _, p := range c.params {
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

// parseHVCC parses an HEVCDecoderConfigurationRecord, keeping its VPS, SPS and PPS.
func parseHVCC(b []byte) (avcConfig, error) {
	var c avcConfig
	if len(b) < 23 {
		return c, malformed("hevc configuration record of %d bytes", len(b))
	}
	if b[0] != 1 {
		return c, malformed("hevc configuration version %d", b[0])
	}
	c.lengthSize = int(b[21]&0x03) + 1
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
		if len(vps)+len(sps)+len(pps) > maxParamSets {
			return c, malformed("more than %d parameter sets", maxParamSets)
		}
	}
	if len(vps) == 0 || len(sps) == 0 || len(pps) == 0 {
		return c, malformed("hevc configuration record without vps, sps and pps")
	}
	c.params = append(append(vps, sps...), pps...)
	return c, nil
}

// readParamSets reads n 16-bit-length-prefixed NAL units, appending them to dst.
func readParamSets(b []byte, n int, dst [][]byte) ([][]byte, []byte, error) {
	if len(dst)+n > maxParamSets {
		return nil, nil, malformed("more than %d parameter sets", maxParamSets)
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

// parseAV1C returns the configuration OBUs (the sequence header) of an
// AV1CodecConfigurationRecord (AV1 ISOBMFF binding §2.3.3).
func parseAV1C(b []byte) ([]byte, error) {
	if len(b) < 4 {
		return nil, malformed("av1 configuration record of %d bytes", len(b))
	}
	if b[0] != 0x81 {
		return nil, malformed("av1 configuration marker/version 0x%02x", b[0])
	}
	return b[4:], nil
}

// splitOBUs appends to dst the OBUs of an AV1 temporal unit in the low-overhead bitstream
// format (AV1 spec §5.2), each rewritten without its obu_size field as RTP wants it (AV1 RTP
// spec §4.3); it allocates one buffer for the rewritten OBUs. Temporal delimiters, which RTP
// does not carry, are dropped.
func splitOBUs(dst [][]byte, tu []byte) ([][]byte, error) {
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
			if len(dst) == maxNALUs {
				return dst, malformed("more than %d obus in one temporal unit", maxNALUs)
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
