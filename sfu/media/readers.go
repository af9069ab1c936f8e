package media

import (
	"bytes"
	"encoding/binary"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpav1"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpvp8"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpvp9"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/av1"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/g711"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/vp9"

	"github.com/sluice-media/sluice/sfu"
)

// keyWait is the start and loss state of the video readers built on gortsplib's decoders.
type keyWait struct {
	waitKey bool
	started bool
}

// lost notes a loss (or the first packet): frames are dropped until a keyframe.
func (k *keyWait) lost(lost bool) {
	if !k.started || lost {
		k.started, k.waitKey = true, true
	}
}

// decoded classifies a decoder's error: ok is false when there is no frame; bad when the
// packet was malformed (then the reader waits for a keyframe).
func (k *keyWait) decoded(err error, more ...error) (ok, bad bool) {
	if err == nil {
		return true, false
	}
	if malformed(err, more...) {
		k.waitKey = true
		return false, true
	}
	return false, false
}

// vp8Reader uses gortsplib's RFC 7741 decoder.
type vp8Reader struct {
	learnedParams
	noHold
	keyWait
	dec rtpvp8.Decoder
	f   Frame
}

func (v *vp8Reader) Push(p *sfu.Packet, ext int64, lost bool, emit func(*Frame)) bool {
	v.lost(lost)
	fr, err := v.dec.Decode(rtpPacket(p))
	if ok, bad := v.decoded(err, rtpvp8.ErrMorePacketsNeeded, rtpvp8.ErrNonStartingPacketAndNoPrevious); !ok {
		return !bad
	}
	if len(fr) < 3 {
		v.waitKey = true
		return false
	}
	key := fr[0]&0x01 == 0
	if key && len(fr) >= 10 { // RFC 6386 §9.1: start code then 14-bit width and height
		w, h := int(fr[6])|int(fr[7]&0x3f)<<8, int(fr[8])|int(fr[9]&0x3f)<<8
		if w != v.params.Width || h != v.params.Height {
			v.params.Width, v.params.Height, v.changed = w, h, true
		}
	}
	if v.waitKey && !key {
		return true
	}
	v.waitKey = false
	v.f = Frame{PTS: ext, DTS: ext, Key: key, Data: fr}
	emit(&v.f)
	return true
}

// vp9Reader uses gortsplib's RFC 9628 decoder.
type vp9Reader struct {
	learnedParams
	noHold
	keyWait
	dec rtpvp9.Decoder
	f   Frame
}

func (v *vp9Reader) Push(p *sfu.Packet, ext int64, lost bool, emit func(*Frame)) bool {
	v.lost(lost)
	fr, err := v.dec.Decode(rtpPacket(p))
	if ok, bad := v.decoded(err, rtpvp9.ErrMorePacketsNeeded, rtpvp9.ErrNonStartingPacketAndNoPrevious); !ok {
		return !bad
	}
	var h vp9.Header
	if h.Unmarshal(fr) != nil {
		v.waitKey = true
		return false
	}
	key := !h.NonKeyFrame
	if key && h.ColorConfig != nil && h.FrameSize != nil {
		if v.params.VP9 == nil || v.params.Width != h.Width() || v.params.Height != h.Height() {
			v.params.VP9, v.changed = &h, true
			v.params.Width, v.params.Height = h.Width(), h.Height()
		}
	}
	if v.waitKey && !key {
		return true
	}
	v.waitKey = false
	v.f = Frame{PTS: ext, DTS: ext, Key: key, Data: fr}
	emit(&v.f)
	return true
}

// av1Reader uses gortsplib's AV1 RTP decoder and hands out temporal units in the low-overhead
// bitstream format (every OBU with its size), as MP4 and Matroska want.
type av1Reader struct {
	learnedParams
	noHold
	keyWait
	dec rtpav1.Decoder
	f   Frame
}

func (a *av1Reader) Push(p *sfu.Packet, ext int64, lost bool, emit func(*Frame)) bool {
	a.lost(lost)
	tu, err := a.dec.Decode(rtpPacket(p))
	if ok, bad := a.decoded(err, rtpav1.ErrMorePacketsNeeded, rtpav1.ErrNonStartingPacketAndNoPrevious); !ok {
		return !bad
	}
	key := av1.IsRandomAccess2(tu)
	if key {
		for _, obu := range tu {
			var oh av1.OBUHeader
			if oh.Unmarshal(obu) == nil && oh.Type == av1.OBUTypeSequenceHeader && !bytes.Equal(obu, a.params.AV1SequenceHeader) {
				var sh av1.SequenceHeader
				if sh.Unmarshal(obu) == nil {
					a.params.AV1SequenceHeader = append([]byte(nil), obu...)
					a.params.Width, a.params.Height = sh.Width(), sh.Height()
					a.changed = true
				}
			}
		}
	}
	if a.waitKey && !key {
		return true
	}
	data, err := av1.Bitstream(tu).Marshal()
	if err != nil {
		a.waitKey = true
		return false
	}
	a.waitKey = false
	a.f = Frame{PTS: ext, DTS: ext, Key: key, Data: data}
	emit(&a.f)
	return true
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
func readBits(b []byte, pos, n int) uint32 {
	var v uint32
	for i := range n {
		bit := pos + i
		v <<= 1
		if bit/8 < len(b) && b[bit/8]&(0x80>>(bit%8)) != 0 {
			v |= 1
		}
	}
	return v
}
