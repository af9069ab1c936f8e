package media

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpav1"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph265"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpsimpleaudio"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpvp8"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpvp9"
	"github.com/pion/rtp"

	"github.com/sluice-media/sluice/sfu"
)

// MaxPayload is the largest RTP payload written: it leaves room for the RTP header, header
// extensions and SRTP inside a 1,280-byte datagram, the smallest safe WebRTC path MTU.
const MaxPayload = 1150

// ErrUnsupported is returned for codecs the writer cannot packetize.
var ErrUnsupported = errors.New("codec not supported by the packetizer")

// Writer packetizes the frames of one track and writes the packets to it. A Writer is used by
// the track's single producer goroutine; it is not safe for concurrent use.
type Writer struct {
	track  *sfu.Track
	codec  string
	encode func(frame [][]byte) ([]*rtp.Packet, error)
	params [][]byte // H.264 SPS, PPS / H.265 VPS, SPS, PPS, sent before every keyframe
}

// NewWriter returns a writer for t's codec and payload type.
func NewWriter(t *sfu.Track) (*Writer, error) {
	c := t.Codec()
	w := &Writer{track: t, codec: c.Name}
	pt, size := c.PayloadType, MaxPayload
	switch c.Name {
	case sfu.CodecH264:
		e := &rtph264.Encoder{PayloadType: pt, PayloadMaxSize: size, PacketizationMode: 1}
		w.encode, w.params = e.Encode, SpropSets(c.Fmtp, "sprop-parameter-sets")
		return w, e.Init()
	case sfu.CodecH265:
		e := &rtph265.Encoder{PayloadType: pt, PayloadMaxSize: size}
		w.encode = e.Encode
		return w, e.Init()
	case sfu.CodecAV1:
		e := &rtpav1.Encoder{PayloadType: pt, PayloadMaxSize: size}
		w.encode = e.Encode
		return w, e.Init()
	case sfu.CodecVP8:
		e := &rtpvp8.Encoder{PayloadType: pt, PayloadMaxSize: size}
		w.encode = single(e.Encode)
		return w, e.Init()
	case sfu.CodecVP9:
		e := &rtpvp9.Encoder{PayloadType: pt, PayloadMaxSize: size}
		w.encode = single(e.Encode)
		return w, e.Init()
	case sfu.CodecAAC:
		e := &rtpmpeg4audio.Encoder{PayloadType: pt, PayloadMaxSize: size, SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3}
		w.encode = e.Encode
		return w, e.Init()
	case sfu.CodecOpus, sfu.CodecPCMU, sfu.CodecPCMA, sfu.CodecG722:
		e := &rtpsimpleaudio.Encoder{PayloadType: pt, PayloadMaxSize: size}
		w.encode = func(frame [][]byte) ([]*rtp.Packet, error) {
			if len(frame) != 1 {
				return nil, fmt.Errorf("%s: one frame per packet", c.Name)
			}
			p, err := e.Encode(frame[0])
			return []*rtp.Packet{p}, err
		}
		return w, e.Init()
	}
	return nil, fmt.Errorf("%w: %s", ErrUnsupported, c.Name)
}

func single(enc func([]byte) ([]*rtp.Packet, error)) func([][]byte) ([]*rtp.Packet, error) {
	return func(frame [][]byte) ([]*rtp.Packet, error) {
		if len(frame) != 1 {
			return nil, errors.New("one frame per call")
		}
		return enc(frame[0])
	}
}

// SetParams replaces the parameter sets sent before every keyframe (H.264: SPS, PPS; H.265:
// VPS, SPS, PPS), e.g. from an RTMP sequence header or an SDP. Parameter sets found in-band in
// a keyframe replace them too.
func (w *Writer) SetParams(nalus [][]byte) {
	w.params = CloneNALUs(nalus)
}

// Params returns the current parameter sets.
func (w *Writer) Params() [][]byte { return w.params }

// Write packetizes one frame with presentation time pts (RTP clock units of the track) and
// writes it to the track. A frame is: H.264/H.265 an access unit as NAL units without start
// codes; AV1 a temporal unit as OBUs; AAC one or more access units; VP8, VP9, Opus, G.711 one
// element. Malformed frames are refused with an error and write nothing.
func (w *Writer) Write(pts uint32, frame [][]byte) error {
	return w.write(pts, 0, false, frame)
}

// WriteDTS is Write for a producer that knows the frame's decode time (RTMP): cts is the
// presentation minus the decode time in RTP ticks. The packets carry it (sfu.Packet.DTSOffset),
// so that readers use it instead of deriving decode times.
func (w *Writer) WriteDTS(pts uint32, cts int32, frame [][]byte) error {
	return w.write(pts, cts, true, frame)
}

func (w *Writer) write(pts uint32, cts int32, hasDTS bool, frame [][]byte) error {
	if len(frame) == 0 {
		return errors.New("empty frame")
	}
	keyframe := false
	switch w.codec {
	case sfu.CodecH264, sfu.CodecH265:
		frame, keyframe = w.withParams(frame)
		if len(frame) == 0 {
			return nil // parameter sets only: kept for the next keyframe
		}
	case sfu.CodecVP8:
		keyframe = len(frame[0]) > 0 && frame[0][0]&0x01 == 0
	case sfu.CodecVP9:
		keyframe = vp9Keyframe(frame[0])
	case sfu.CodecAV1:
		keyframe = av1HasSequenceHeader(frame)
	}
	pkts, err := w.encode(frame)
	if err != nil {
		return err
	}
	if len(pkts) == 0 {
		return fmt.Errorf("%s: the packetizer could not parse the frame", w.codec)
	}
	for i, p := range pkts {
		p.Timestamp = pts
		w.track.WritePacket(&sfu.Packet{Header: p.Header, Payload: p.Payload, Keyframe: keyframe && i == 0, HasDTS: hasDTS, DTSOffset: cts})
	}
	return nil
}

// withParams drops access unit delimiters and in-band parameter sets (learning them), and puts
// the current parameter sets first when the access unit holds a keyframe.
func (w *Writer) withParams(au [][]byte) ([][]byte, bool) {
	h265 := w.codec == sfu.CodecH265
	var body, inband [][]byte
	key := false
	for _, n := range au {
		if len(n) == 0 {
			continue
		}
		switch typ := nalType(n, h265); {
		case !h265 && typ == 9, h265 && typ == 35: // access unit delimiter
		case !h265 && (typ == 7 || typ == 8), h265 && typ >= 32 && typ <= 34:
			inband = append(inband, n)
		default:
			if (!h265 && typ == 5) || (h265 && typ >= 16 && typ <= 21) {
				key = true
			}
			body = append(body, n)
		}
	}
	if len(inband) > 0 && !slices.EqualFunc(inband, w.params, bytes.Equal) {
		w.params = mergeParams(w.params, inband, h265)
	}
	if !key || len(body) == 0 {
		return body, false
	}
	return append(append(make([][]byte, 0, len(w.params)+len(body)), w.params...), body...), true
}

// mergeParams replaces the stored parameter sets of each type present in-band.
func mergeParams(old, inband [][]byte, h265 bool) [][]byte {
	byType := map[byte][]byte{}
	var order []byte
	for _, set := range [][][]byte{old, inband} {
		for _, n := range set {
			t := nalType(n, h265)
			if _, ok := byType[t]; !ok {
				order = append(order, t)
			}
			byType[t] = n
		}
	}
	out := make([][]byte, 0, len(order))
	for _, t := range order {
		out = append(out, bytes.Clone(byType[t]))
	}
	return out
}

// vp9Keyframe reads the start of a VP9 uncompressed header (VP9 bitstream §6.2): frame_marker,
// profile bits, a reserved bit in profile 3, show_existing_frame, then frame_type (0 = key).
func vp9Keyframe(f []byte) bool {
	if len(f) < 1 || f[0]>>6 != 2 {
		return false
	}
	profile := (f[0]>>4)&1<<1 | (f[0]>>5)&1
	pos := 4 // bits consumed from the most significant end
	if profile == 3 {
		pos++
	}
	if f[0]>>(7-pos)&1 == 1 { // show_existing_frame
		return false
	}
	pos++
	return f[0]>>(7-pos)&1 == 0
}

func av1HasSequenceHeader(obus [][]byte) bool {
	for _, o := range obus {
		if len(o) > 0 && (o[0]>>3)&0x0f == 1 { // OBU_SEQUENCE_HEADER
			return true
		}
	}
	return false
}

// H264Codec describes an H.264 track from its SPS and PPS: packetization mode 1, the SPS's
// profile-level-id and the sprop-parameter-sets (RFC 6184 §8.1).
func H264Codec(sps, pps []byte, payloadType uint8) sfu.Codec {
	fmtp := "packetization-mode=1"
	if len(sps) >= 4 {
		fmtp += ";profile-level-id=" + strings.ToLower(hex.EncodeToString(sps[1:4]))
	}
	if len(sps) > 0 && len(pps) > 0 {
		fmtp += ";sprop-parameter-sets=" + base64.StdEncoding.EncodeToString(sps) + "," + base64.StdEncoding.EncodeToString(pps)
	}
	return sfu.Codec{Name: sfu.CodecH264, ClockRate: 90000, Fmtp: fmtp, PayloadType: payloadType}
}

// AACCodec describes an AAC track carried as MPEG4-GENERIC (RFC 3640, AAC-hbr) from its
// AudioSpecificConfig.
func AACCodec(config []byte, sampleRate, channels int, payloadType uint8) sfu.Codec {
	return sfu.Codec{
		Name:        sfu.CodecAAC,
		ClockRate:   uint32(sampleRate),
		Channels:    uint16(channels),
		PayloadType: payloadType,
		Fmtp: "profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=" +
			hex.EncodeToString(config),
	}
}
