package media

import (
	"bytes"
	"encoding/binary"
	"errors"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpav1"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpvp8"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpvp9"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/av1"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/g711"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/vp9"
	"github.com/pion/rtp"

	"github.com/sluice-media/sluice/sfu"
)

// errMalformed is what the video decoders below report for a frame they cannot read.
var errMalformed = errors.New("malformed frame")

// videoReader reads the video codecs gortsplib depacketizes (VP8, VP9, AV1). decode returns a
// complete frame and whether it is a keyframe, learning the parameters from keyframes; more are
// its errors that only mean "more packets needed".
type videoReader struct {
	learnedParams
	noHold
	decode  func(*rtp.Packet) (frame []byte, key bool, err error)
	more    []error
	waitKey bool
	started bool
	f       Frame
}

func (v *videoReader) Push(p *sfu.Packet, ext int64, lost bool, emit func(*Frame)) bool {
	if !v.started || lost {
		v.started, v.waitKey = true, true
	}
	fr, key, err := v.decode(rtpPacket(p))
	if err != nil {
		bad := malformed(err, v.more...)
		if bad {
			v.waitKey = true
		}
		return !bad
	}
	if v.waitKey && !key {
		return true
	}
	v.waitKey = false
	v.f = Frame{PTS: ext, DTS: ext, Key: key, Data: fr}
	emit(&v.f)
	return true
}

// size records a keyframe's resolution.
func (v *videoReader) size(w, h int) {
	if w != v.params.Width || h != v.params.Height {
		v.params.Width, v.params.Height, v.changed = w, h, true
	}
}

// newVP8Reader uses gortsplib's RFC 7741 decoder.
func newVP8Reader() (*videoReader, error) {
	var dec rtpvp8.Decoder
	v := &videoReader{more: []error{rtpvp8.ErrMorePacketsNeeded, rtpvp8.ErrNonStartingPacketAndNoPrevious}}
	v.decode = func(pkt *rtp.Packet) ([]byte, bool, error) {
		fr, err := dec.Decode(pkt)
		if err != nil {
			return nil, false, err
		}
		if len(fr) < 3 {
			return nil, false, errMalformed
		}
		key := fr[0]&0x01 == 0
		if key && len(fr) >= 10 { // RFC 6386 §9.1: start code then 14-bit width and height
			v.size(int(fr[6])|int(fr[7]&0x3f)<<8, int(fr[8])|int(fr[9]&0x3f)<<8)
		}
		return fr, key, nil
	}
	return v, dec.Init()
}

// newVP9Reader uses gortsplib's RFC 9628 decoder.
func newVP9Reader() (*videoReader, error) {
	var dec rtpvp9.Decoder
	v := &videoReader{more: []error{rtpvp9.ErrMorePacketsNeeded, rtpvp9.ErrNonStartingPacketAndNoPrevious}}
	v.decode = func(pkt *rtp.Packet) ([]byte, bool, error) {
		fr, err := dec.Decode(pkt)
		if err != nil {
			return nil, false, err
		}
		var h vp9.Header
		if h.Unmarshal(fr) != nil {
			return nil, false, errMalformed
		}
		key := !h.NonKeyFrame
		if key && h.ColorConfig != nil && h.FrameSize != nil && (v.params.VP9 == nil || v.params.Width != h.Width() || v.params.Height != h.Height()) {
			v.params.VP9, v.changed = &h, true
			v.size(h.Width(), h.Height())
		}
		return fr, key, nil
	}
	return v, dec.Init()
}

// newAV1Reader uses gortsplib's AV1 RTP decoder and hands out temporal units in the
// low-overhead bitstream format (every OBU with its size), as MP4 and Matroska want.
func newAV1Reader() (*videoReader, error) {
	var dec rtpav1.Decoder
	v := &videoReader{more: []error{rtpav1.ErrMorePacketsNeeded, rtpav1.ErrNonStartingPacketAndNoPrevious}}
	v.decode = func(pkt *rtp.Packet) ([]byte, bool, error) {
		tu, err := dec.Decode(pkt)
		if err != nil {
			return nil, false, err
		}
		key := av1.IsRandomAccess2(tu)
		for _, obu := range tu {
			var oh av1.OBUHeader
			if !key || oh.Unmarshal(obu) != nil || oh.Type != av1.OBUTypeSequenceHeader || bytes.Equal(obu, v.params.AV1SequenceHeader) {
				continue
			}
			var sh av1.SequenceHeader
			if sh.Unmarshal(obu) == nil {
				v.params.AV1SequenceHeader, v.changed = append([]byte(nil), obu...), true
				v.size(sh.Width(), sh.Height())
			}
		}
		data, err := av1.Bitstream(tu).Marshal()
		if err != nil {
			return nil, false, errMalformed
		}
		return data, key, nil
	}
	return v, dec.Init()
}

// opusReader: one Opus packet per RTP packet (RFC 7587).
type opusReader struct {
	noHold
	params Params
	f      Frame
}

func (o *opusReader) Push(p *sfu.Packet, ext int64, _ bool, emit func(*Frame)) bool {
	if len(p.Payload) == 0 {
		return false
	}
	d := opus.PacketDuration2(p.Payload) // in 48 kHz samples
	o.f = Frame{PTS: ext, DTS: ext, Key: true, Data: p.Payload, Dur: d}
	emit(&o.f)
	return true
}

func (o *opusReader) Params() (Params, bool) { return o.params, false }

// g711Reader: PCMU/PCMA samples (RFC 3551), decoded to 16-bit PCM for the containers.
type g711Reader struct {
	noHold
	alaw   bool
	params Params
	f      Frame
}

func (g *g711Reader) Push(p *sfu.Packet, ext int64, _ bool, emit func(*Frame)) bool {
	if len(p.Payload) == 0 {
		return false
	}
	var pcm []byte
	if g.alaw {
		var a g711.Alaw
		a.Unmarshal(p.Payload)
		pcm = a
	} else {
		var m g711.Mulaw
		m.Unmarshal(p.Payload)
		pcm = m
	}
	g.f = Frame{PTS: ext, DTS: ext, Key: true, Data: pcm, Dur: int64(len(p.Payload) / g.params.Channels)}
	emit(&g.f)
	return true
}

func (g *g711Reader) Params() (Params, bool) { return g.params, false }

// aacReader reads the access units of MPEG4-GENERIC packets (RFC 3640 §3.2, AAC-hbr and
// AAC-lbr: AU-headers of sizeLength + indexLength bits, then sizeLength + indexDeltaLength, no
// auxiliary data). An access unit fragmented over several packets (§3.2.3: one AU-header
// each, the marker bit on the last) is reassembled.
//
// It is ours rather than gortsplib's rtpmpeg4audio.Decoder, which allocates its AU list and
// header sizes on every packet: this one allocates nothing once its fragment buffer has grown.
type aacReader struct {
	noHold
	params                              Params
	sizeLength, indexLength, indexDelta int
	frag                                []byte
	fragExt                             int64
	inFrag                              bool
	f                                   Frame
}

func newAACReader(c sfu.Codec) (*aacReader, error) {
	a, err := ParseAAC(c)
	if err != nil {
		return nil, err
	}
	n := a.SamplesPerUnit()
	return &aacReader{
		params:     Params{AAC: &a.Config, Channels: a.Config.ChannelCount, SampleRate: a.Config.SampleRate, SamplesPerUnit: n},
		sizeLength: a.SizeLength, indexLength: a.IndexLength, indexDelta: a.IndexDeltaLength,
	}, nil
}

func (a *aacReader) Params() (Params, bool) { return a.params, false }

func (a *aacReader) Push(p *sfu.Packet, ext int64, lost bool, emit func(*Frame)) bool {
	payload, marker := p.Payload, p.Header.Marker
	if lost {
		a.inFrag = false
	}
	if len(payload) < 2 {
		a.inFrag = false
		return false
	}
	headerBits := int(binary.BigEndian.Uint16(payload))
	hdrBytes := (headerBits + 7) / 8
	first, next := a.sizeLength+a.indexLength, a.sizeLength+a.indexDelta
	if headerBits < first || (headerBits-first)%next != 0 || 2+hdrBytes > len(payload) {
		a.inFrag = false
		return false
	}
	n := 1 + (headerBits-first)/next
	hdr := payload[2 : 2+hdrBytes]
	data := payload[2+hdrBytes:]
	if a.inFrag || (n == 1 && !marker) { // a fragment of one access unit
		if a.inFrag && (n != 1 || ext != a.fragExt) {
			a.inFrag = false
			return false
		}
		if !a.inFrag {
			a.frag, a.fragExt, a.inFrag = a.frag[:0], ext, true
		}
		if len(a.frag)+len(data) > maxAccessUnit {
			a.inFrag = false
			return false
		}
		a.frag = append(a.frag, data...)
		if !marker {
			return true
		}
		a.inFrag = false
		if len(a.frag) == 0 {
			return false
		}
		a.emit(ext, a.frag, emit)
		return true
	}
	dur := int64(a.params.SamplesPerUnit)
	for i := range n {
		pos := 0
		if i > 0 {
			pos = first + (i-1)*next
		}
		size := int(readBits(hdr, pos, a.sizeLength))
		if size == 0 || size > len(data) {
			return false
		}
		a.emit(ext+int64(i)*dur, data[:size], emit)
		data = data[size:]
	}
	return true
}

func (a *aacReader) emit(ext int64, au []byte, emit func(*Frame)) {
	a.f = Frame{PTS: ext, DTS: ext, Key: true, Data: au, Dur: int64(a.params.SamplesPerUnit)}
	emit(&a.f)
}

// readBits reads n (<= 32) bits of b starting at bit pos, big-endian; missing bits read as 0.
// It loads the (at most five) bytes that hold them at once rather than bit by bit.
func readBits(b []byte, pos, n int) uint32 {
	if n == 0 {
		return 0
	}
	var w uint64 // 40 bits from byte pos/8 on
	for i, at := 0, pos/8; i < 5; i, at = i+1, at+1 {
		w <<= 8
		if at < len(b) {
			w |= uint64(b[at])
		}
	}
	return uint32(w >> (40 - pos%8 - n) & (1<<n - 1)) //nolint:gosec // n <= 32: the mask fits
}
