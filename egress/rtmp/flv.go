package rtmp

import (
	"encoding/binary"
	"errors"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
)

// FLV tag bodies of RTMP audio and video messages: Adobe FLV spec v10.1 §E.4.2.1 (AUDIODATA)
// and §E.4.3.1 (VIDEODATA) with the AVC and AAC packets of §E.4.3.2 and §E.4.2.2.

// FLV codec ids and packet types.
const (
	flvCodecAVC         = 7
	flvFrameKey         = 1
	flvFrameInter       = 2
	avcSequenceHeader   = 0
	avcNALU             = 1
	avcEndOfSequence    = 2
	aacTagByte          = 0xaf // AAC, 44 kHz, 16-bit, stereo: what the spec mandates for AAC
	aacSequenceHeader   = 0
	aacRaw              = 1
	flvCodecAACMetadata = 10
)

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
	b = append(b, flvFrameKey<<4|flvCodecAVC, avcSequenceHeader, 0, 0, 0)
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

// AVCFrameSize returns the size of the tag body AppendAVCFrame writes for nalus.
func AVCFrameSize(nalus [][]byte) int {
	n := 5
	for _, u := range nalus {
		n += 4 + len(u)
	}
	return n
}

// AppendAVCFrame appends the body of an AVC NALU tag: the access unit as 4-byte
// length-prefixed NAL units, with its composition time offset (PTS - DTS) in milliseconds.
func AppendAVCFrame(dst []byte, keyframe bool, cts int32, nalus [][]byte) []byte {
	frame := byte(flvFrameInter)
	if keyframe {
		frame = flvFrameKey
	}
	dst = append(dst, frame<<4|flvCodecAVC, avcNALU, byte(cts>>16), byte(cts>>8), byte(cts))
	for _, u := range nalus {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(u)))
		dst = append(dst, u...)
	}
	return dst
}

// AVCEndOfSequence returns the body of the AVC end-of-sequence tag sent before unpublishing.
func AVCEndOfSequence() []byte {
	return []byte{flvFrameKey<<4 | flvCodecAVC, avcEndOfSequence, 0, 0, 0}
}

// AACSequenceHeader returns the body of an AAC sequence header tag carrying an
// AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1).
func AACSequenceHeader(asc []byte) []byte {
	return append([]byte{aacTagByte, aacSequenceHeader}, asc...)
}

// AppendAACFrame appends the body of an AAC raw tag: one access unit.
func AppendAACFrame(dst []byte, au []byte) []byte {
	return append(append(dst, aacTagByte, aacRaw), au...)
}

// Metadata returns the onMetaData properties of an H.264 + AAC stream; zero values are left
// out.
func Metadata(width, height int, fps float64, sampleRate, channels int) map[string]any {
	md := map[string]any{"videocodecid": float64(flvCodecAVC), "encoder": "sluice"}
	if width > 0 && height > 0 {
		md["width"], md["height"] = float64(width), float64(height)
	}
	if fps > 0 {
		md["framerate"] = fps
	}
	if sampleRate > 0 {
		md["audiocodecid"] = float64(flvCodecAACMetadata)
		md["audiosamplerate"] = float64(sampleRate)
		md["audiochannels"] = float64(channels)
		md["stereo"] = channels == 2
	}
	return md
}
