// Package rtmptest builds RTMP input for tests: chunk streams as clients send them, AMF0, and
// FLV tag bodies of every kind the server parses, including malformed ones.
package rtmptest

import (
	"encoding/binary"
	"math"

	"github.com/sluice-media/sluice/sfu/rtmpproto"
)

// A real 320x240 H.264 High profile SPS and its PPS (libx264), and the AudioSpecificConfig of
// AAC-LC, 48 kHz, stereo.
var (
	SPS = []byte{0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00,
		0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0x99, 0x60}
	PPS = []byte{0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0}
	ASC = []byte{0x11, 0x90}
)

// AMF builds AMF0 bytes, including malformed ones.
type AMF []byte

// Str appends a string value.
func (a AMF) Str(s string) AMF { return append(a, rtmpproto.AMFString).Key(s) }

// Num appends a number value.
func (a AMF) Num(v float64) AMF {
	return binary.BigEndian.AppendUint64(append(a, rtmpproto.AMFNumber), math.Float64bits(v))
}

// Key appends a property name.
func (a AMF) Key(k string) AMF { return append(binary.BigEndian.AppendUint16(a, uint16(len(k))), k...) }

// End appends the end of an object.
func (a AMF) End() AMF { return append(a, 0, 0, rtmpproto.AMFObjectEnd) }

// Connect is the connect command of a publisher to the app live.
func Connect() AMF {
	b := append(AMF(nil).Str("connect").Num(1), rtmpproto.AMFObject)
	return b.Key("app").Str("live").Key("type").Str("nonprivate").Key("tcUrl").Str("rtmp://127.0.0.1/live").End()
}

// Chunker writes what a client sends after the handshake: messages as a type 0 chunk then type
// 3 chunks (RTMP spec §5.3.1), on chunk streams 2 to 63.
type Chunker struct {
	B         []byte
	ChunkSize int
}

// NewChunker returns a Chunker whose bytes start with a client handshake.
func NewChunker() *Chunker { return &Chunker{B: Handshake(), ChunkSize: rtmpproto.DefaultChunkSize} }

// Handshake returns C0, C1 and C2.
func Handshake() []byte {
	b := make([]byte, rtmpproto.HandshakeSize)
	b[0] = rtmpproto.Version
	return b
}

// Header appends a type 0 header declaring length (which may differ from the payload sent).
func (c *Chunker) Header(csid int, ts uint32, length int, typ byte, streamID uint32) {
	c.B = rtmpproto.AppendChunkHeader(c.B, byte(csid), typ, streamID, ts, length)
}

// Msg appends one message, split into chunks of c.ChunkSize.
func (c *Chunker) Msg(csid int, ts uint32, typ byte, streamID uint32, payload []byte) {
	c.B = rtmpproto.AppendMessage(c.B, byte(csid), typ, streamID, ts, payload, c.ChunkSize)
}

// SetChunkSize appends a Set Chunk Size message and follows it.
func (c *Chunker) SetChunkSize(n uint32) {
	c.Msg(2, 0, rtmpproto.TypeSetChunkSize, 0, binary.BigEndian.AppendUint32(nil, n))
	c.ChunkSize = int(min(n&0x7fffffff, rtmpproto.MaxChunkSize))
}

// Session is what OBS sends: connect, a larger chunk size, createStream, publish, then
// metadata, audio and video interleaved on their chunk streams, with n video frames of size
// bytes.
func Session(n, size int) []byte {
	c := NewChunker()
	c.SetChunkSize(4096)
	c.Msg(3, 0, rtmpproto.TypeCommandAMF0, 0, Connect())
	c.Msg(3, 0, rtmpproto.TypeCommandAMF0, 0, append(AMF(nil).Str("createStream").Num(2), rtmpproto.AMFNull))
	c.Msg(3, 0, rtmpproto.TypeCommandAMF0, 0, append(AMF(nil).Str("publish").Num(3), append([]byte{rtmpproto.AMFNull}, AMF(nil).Str("room").Str("live")...)...))
	c.Msg(4, 0, rtmpproto.TypeDataAMF0, 1, AMF(nil).Str("@setDataFrame").Str("onMetaData"))
	c.Msg(6, 0, rtmpproto.TypeVideo, 1, AVCTag(true, 0, 0, AVCConfigRecord(SPS, PPS)))
	c.Msg(4, 0, rtmpproto.TypeAudio, 1, AACTag(0, ASC))
	for i := range n {
		c.Msg(6, uint32(i*33), rtmpproto.TypeVideo, 1, AVCTag(i == 0, 1, 66, LengthPrefixed(FakeIDR(size))))
		c.Msg(4, uint32(i*21), rtmpproto.TypeAudio, 1, AACTag(1, make([]byte, 300)))
	}
	return c.B
}

// AVCConfigRecord is the AVCDecoderConfigurationRecord of a valid SPS and PPS, with 4-byte NAL
// unit lengths: the body of rtmpproto.AVCSequenceHeader after its tag header.
func AVCConfigRecord(sps, pps []byte) []byte {
	b, err := rtmpproto.AVCSequenceHeader(sps, pps)
	if err != nil {
		panic(err)
	}
	return b[5:]
}

// HEVCConfigRecord is an HEVCDecoderConfigurationRecord (ISO 14496-15 §8.3.3.1) with 4-byte
// NAL unit lengths; the profile fields are copied from the SPS's profile_tier_level.
func HEVCConfigRecord(vps, sps, pps []byte) []byte {
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
	for i, nalu := range [][]byte{vps, sps, pps} { // NAL unit types 32, 33, 34
		b = append(b, 0x80|byte(32+i), 0, 1)
		b = binary.BigEndian.AppendUint16(b, uint16(len(nalu)))
		b = append(b, nalu...)
	}
	return b
}

// LengthPrefixed is an access unit of NAL units with 4-byte lengths.
func LengthPrefixed(nalus ...[]byte) []byte {
	var b []byte
	for _, n := range nalus {
		b = binary.BigEndian.AppendUint32(b, uint32(len(n)))
		b = append(b, n...)
	}
	return b
}

func frameType(key bool) byte {
	if key {
		return rtmpproto.FrameKey
	}
	return rtmpproto.FrameInter
}

// AVCTag is a legacy AVC video tag of any packet type (0: sequence header, 1: NAL units).
func AVCTag(key bool, pkt byte, cts int32, data []byte) []byte {
	b := []byte{frameType(key)<<4 | rtmpproto.FLVVideoAVC, pkt, byte(cts >> 16), byte(cts >> 8), byte(cts)}
	return append(b, data...)
}

// ExVideoTag is an Enhanced RTMP video tag; cts is written for CodedFrames of avc1/hvc1.
func ExVideoTag(fourCC string, pkt byte, key bool, cts int32, data []byte) []byte {
	b := append([]byte{0x80 | frameType(key)<<4 | pkt}, fourCC...)
	if pkt == rtmpproto.ExCodedFrames && (fourCC == "hvc1" || fourCC == "avc1") {
		b = append(b, byte(cts>>16), byte(cts>>8), byte(cts))
	}
	return append(b, data...)
}

// AACTag is an AAC audio tag of any packet type (0: sequence header, 1: raw).
func AACTag(pkt byte, data []byte) []byte {
	return append([]byte{rtmpproto.FLVAudioAAC<<4 | 0x0f, pkt}, data...)
}

// FakeIDR and FakeSlice are NAL units of n bytes that a server forwards without decoding.
func FakeIDR(n int) []byte { return fakeNALU(0x65, n, 1) }

// FakeSlice is a non-IDR slice NAL unit of n bytes; see FakeIDR.
func FakeSlice(n int) []byte { return fakeNALU(0x41, n, 7) }

func fakeNALU(header byte, n, step int) []byte {
	b := make([]byte, n)
	b[0] = header
	for i := 1; i < n; i++ {
		b[i] = byte(i * step)
	}
	return b
}
