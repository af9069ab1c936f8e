package rtmp

import (
	"encoding/binary"
)

// Test encoders of FLV tag bodies (FLV spec §E.4, Enhanced RTMP), the inverse of flv.go.

// A real 320x240 H.264 High profile SPS and its PPS (libx264).
var (
	testSPS = []byte{0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00,
		0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0x99, 0x60}
	testPPS = []byte{0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0}
)

func avcConfigRecord(sps, pps []byte) []byte {
	b := []byte{1, sps[1], sps[2], sps[3], 0xff, 0xe1}
	b = binary.BigEndian.AppendUint16(b, uint16(len(sps)))
	b = append(b, sps...)
	b = append(b, 1)
	b = binary.BigEndian.AppendUint16(b, uint16(len(pps)))
	return append(b, pps...)
}

// hevcConfigRecord builds an HEVCDecoderConfigurationRecord (ISO 14496-15 §8.3.3.1) with
// 4-byte NAL unit lengths; the profile fields are copied from the SPS's profile_tier_level.
func hevcConfigRecord(vps, sps, pps []byte) []byte {
	b := make([]byte, 23)
	b[0] = 1
	if len(sps) >= 15 {
		copy(b[1:13], sps[3:15]) // general profile space … level idc, good enough for a test
	}
	b[13], b[14] = 0xf0, 0x00 // min_spatial_segmentation_idc
	b[15] = 0xfc              // parallelismType
	b[16] = 0xfd              // chroma_format_idc 4:2:0
	b[17], b[18] = 0xf8, 0xf8 // bit depths 8
	b[21] = 0x0f              // constantFrameRate 0, numTemporalLayers 1, temporalIdNested 1, lengthSizeMinusOne 3
	b[22] = 3
	for _, n := range []struct {
		typ  byte
		nalu []byte
	}{{32, vps}, {33, sps}, {34, pps}} {
		b = append(b, 0x80|n.typ)
		b = binary.BigEndian.AppendUint16(b, 1)
		b = binary.BigEndian.AppendUint16(b, uint16(len(n.nalu)))
		b = append(b, n.nalu...)
	}
	return b
}

func lengthPrefixed(nalus ...[]byte) []byte {
	var b []byte
	for _, n := range nalus {
		b = binary.BigEndian.AppendUint32(b, uint32(len(n)))
		b = append(b, n...)
	}
	return b
}

func si24Bytes(v int32) []byte { return []byte{byte(v >> 16), byte(v >> 8), byte(v)} }

// avcTag is a legacy AVC video tag: packet type 0 (sequence header) or 1 (NAL units).
func avcTag(key bool, pkt byte, cts int32, data []byte) []byte {
	ft := byte(2)
	if key {
		ft = 1
	}
	b := append([]byte{ft<<4 | flvVideoAVC, pkt}, si24Bytes(cts)...)
	return append(b, data...)
}

// exVideoTag is an Enhanced RTMP video tag; cts is written for CodedFrames of avc1/hvc1.
func exVideoTag(fourCC string, pkt byte, key bool, cts int32, data []byte) []byte {
	ft := byte(2)
	if key {
		ft = 1
	}
	b := append([]byte{0x80 | ft<<4 | pkt}, fourCC...)
	if pkt == exCodedFrames && (fourCC == "hvc1" || fourCC == "avc1") {
		b = append(b, si24Bytes(cts)...)
	}
	return append(b, data...)
}

func aacTag(pkt byte, data []byte) []byte {
	return append([]byte{flvAudioAAC<<4 | 0x0f, pkt}, data...)
}

// testASC is the AudioSpecificConfig of AAC-LC, 48 kHz, stereo.
var testASC = []byte{0x11, 0x90}

// fakeIDR and fakeSlice are NAL units the server forwards without decoding.
func fakeIDR(n int) []byte {
	b := make([]byte, n)
	b[0] = 0x65
	for i := 1; i < n; i++ {
		b[i] = byte(i)
	}
	return b
}

func fakeSlice(n int) []byte {
	b := make([]byte, n)
	b[0] = 0x41
	for i := 1; i < n; i++ {
		b[i] = byte(i * 7)
	}
	return b
}
