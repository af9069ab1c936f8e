package recorder

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpav1"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpvp8"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpvp9"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/av1"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/g711"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/vp9"
	"github.com/pion/rtp"

	"github.com/sluice-media/sluice/sfu"
)

// frame is one decoded unit of a track, ready for a container: a video access unit or an audio
// frame. Its data is valid until the depacketizer is called again.
type frame struct {
	pts, dts int64 // extended RTP ticks
	key      bool  // a video frame a decoder may start at (always true for audio)
	data     []byte
	// dur is the frame's own duration in ticks when the codec says it (audio), else 0.
	dur int64
}

// depacketizer turns a track's RTP packets into frames. Implementations are owned by one
// goroutine and never panic on malformed input: they report it and wait for the next frame
// start (a keyframe for video).
type depacketizer interface {
	// write consumes one packet whose extended timestamp is ext; lost reports missing packets
	// before it. emit is called for each complete frame. It returns false when the packet was
	// malformed.
	write(p *sfu.Packet, ext int64, lost bool, emit func(*frame)) bool
	// config returns the codec configuration learned from the stream (parameter sets, sequence
	// header); changed reports a change since the previous call.
	config() (cfg codecConfig, changed bool)
	// end hands out frames still held (the source ended).
	end(emit func(*frame))
}

// noHold is embedded by depacketizers that hold no frames.
type noHold struct{}

func (noHold) end(func(*frame)) {}

// codecConfig is what a container's header needs beyond the codec name.
type codecConfig struct {
	sps, pps, vps  []byte // H.264 / H.265 parameter sets
	av1SeqHeader   []byte
	vp9            *vp9.Header
	aac            *mpeg4audio.AudioSpecificConfig
	width, height  int
	channels       int
	sampleRate     int
	samplesPerUnit int // AAC samples per access unit
}

// errUnsupportedCodec is returned for a codec no container of the recorder takes.
var errUnsupportedCodec = errors.New("codec not supported by the recorder")

// newDepacketizer returns the depacketizer for a codec.
func newDepacketizer(c sfu.Codec) (depacketizer, error) {
	switch c.Name {
	case sfu.CodecH264, sfu.CodecH265:
		return newH26xDepack(c.Name), nil
	case sfu.CodecVP8:
		d := &vp8Depack{}
		return d, d.dec.Init()
	case sfu.CodecVP9:
		d := &vp9Depack{}
		return d, d.dec.Init()
	case sfu.CodecAV1:
		d := &av1Depack{}
		return d, d.dec.Init()
	case sfu.CodecOpus:
		ch := int(c.Channels)
		if ch == 0 {
			ch = 2
		}
		return &opusDepack{cfg: codecConfig{channels: ch, sampleRate: 48000}}, nil
	case sfu.CodecAAC:
		return newAACDepack(c)
	case sfu.CodecPCMU, sfu.CodecPCMA:
		ch := int(c.Channels)
		if ch == 0 {
			ch = 1
		}
		return &g711Depack{alaw: c.Name == sfu.CodecPCMA, cfg: codecConfig{channels: ch, sampleRate: int(c.ClockRate)}}, nil
	}
	return nil, errUnsupportedCodec
}

// learn keeps the parameter sets of a keyframe (copied only when they change).
func (h *h26xDepack) learn(nalus [][]byte) {
	for _, n := range nalus {
		var dst *[]byte
		if h.h265 {
			switch (n[0] >> 1) & 0x3f {
			case 32:
				dst = &h.cfg.vps
			case 33:
				dst = &h.cfg.sps
			case 34:
				dst = &h.cfg.pps
			}
		} else {
			switch n[0] & 0x1f {
			case 7:
				dst = &h.cfg.sps
			case 8:
				dst = &h.cfg.pps
			}
		}
		if dst == nil || bytes.Equal(*dst, n) {
			continue
		}
		*dst = append([]byte(nil), n...)
		h.changed = true
		if dst != &h.cfg.sps {
			continue
		}
		if h.h265 {
			var sps h265.SPS
			if sps.Unmarshal(n) == nil {
				h.cfg.width, h.cfg.height = sps.Width(), sps.Height()
				h.setReorder(h265Reorder(&sps))
			}
		} else {
			var sps h264.SPS
			if sps.Unmarshal(n) == nil {
				h.cfg.width, h.cfg.height = sps.Width(), sps.Height()
				h.setReorder(h264Reorder(&sps))
			}
		}
	}
}

func (h *h26xDepack) config() (codecConfig, bool) {
	c := h.changed
	h.changed = false
	return h.cfg, c
}

// ready reports whether the parameter sets a container header needs are known.
func (c codecConfig) ready(codec string) bool {
	switch codec {
	case sfu.CodecH264:
		return len(c.sps) > 0 && len(c.pps) > 0
	case sfu.CodecH265:
		return len(c.sps) > 0 && len(c.pps) > 0 && len(c.vps) > 0
	case sfu.CodecAV1:
		return len(c.av1SeqHeader) > 0
	case sfu.CodecVP9:
		return c.vp9 != nil
	case sfu.CodecAAC:
		return c.aac != nil
	}
	return true
}

// rtpPacket builds the gortsplib decoders' input.
func rtpPacket(p *sfu.Packet) *rtp.Packet {
	return &rtp.Packet{Header: p.Header, Payload: p.Payload}
}

// decodeErr separates "more packets needed" from real errors of the gortsplib decoders.
func decodeErr(err error, more ...error) (malformed bool) {
	for _, m := range more {
		if errors.Is(err, m) {
			return false
		}
	}
	return true
}

// vp8Depack uses gortsplib's RFC 7741 decoder.
type vp8Depack struct {
	noHold
	dec     rtpvp8.Decoder
	cfg     codecConfig
	changed bool
	waitKey bool
	started bool
	f       frame
}

func (v *vp8Depack) write(p *sfu.Packet, ext int64, lost bool, emit func(*frame)) bool {
	if !v.started || lost {
		v.started, v.waitKey = true, true
	}
	fr, err := v.dec.Decode(rtpPacket(p))
	if err != nil {
		bad := decodeErr(err, rtpvp8.ErrMorePacketsNeeded, rtpvp8.ErrNonStartingPacketAndNoPrevious)
		if bad {
			v.waitKey = true
		}
		return !bad
	}
	if len(fr) < 3 {
		v.waitKey = true
		return false
	}
	key := fr[0]&0x01 == 0
	if key && len(fr) >= 10 { // RFC 6386 §9.1: start code then 14-bit width and height
		w, h := int(fr[6])|int(fr[7]&0x3f)<<8, int(fr[8])|int(fr[9]&0x3f)<<8
		if w != v.cfg.width || h != v.cfg.height {
			v.cfg.width, v.cfg.height, v.changed = w, h, true
		}
	}
	if v.waitKey && !key {
		return true
	}
	v.waitKey = false
	v.f = frame{pts: ext, dts: ext, key: key, data: fr}
	emit(&v.f)
	return true
}

func (v *vp8Depack) config() (codecConfig, bool) {
	c := v.changed
	v.changed = false
	return v.cfg, c
}

// vp9Depack uses gortsplib's RFC 9628 decoder.
type vp9Depack struct {
	noHold
	dec     rtpvp9.Decoder
	cfg     codecConfig
	changed bool
	waitKey bool
	started bool
	f       frame
}

func (v *vp9Depack) write(p *sfu.Packet, ext int64, lost bool, emit func(*frame)) bool {
	if !v.started || lost {
		v.started, v.waitKey = true, true
	}
	fr, err := v.dec.Decode(rtpPacket(p))
	if err != nil {
		bad := decodeErr(err, rtpvp9.ErrMorePacketsNeeded, rtpvp9.ErrNonStartingPacketAndNoPrevious)
		if bad {
			v.waitKey = true
		}
		return !bad
	}
	var h vp9.Header
	if h.Unmarshal(fr) != nil {
		v.waitKey = true
		return false
	}
	key := !h.NonKeyFrame
	if key && h.ColorConfig != nil && h.FrameSize != nil {
		if v.cfg.vp9 == nil || v.cfg.width != h.Width() || v.cfg.height != h.Height() {
			v.cfg.vp9, v.changed = &h, true
			v.cfg.width, v.cfg.height = h.Width(), h.Height()
		}
	}
	if v.waitKey && !key {
		return true
	}
	v.waitKey = false
	v.f = frame{pts: ext, dts: ext, key: key, data: fr}
	emit(&v.f)
	return true
}

func (v *vp9Depack) config() (codecConfig, bool) {
	c := v.changed
	v.changed = false
	return v.cfg, c
}

// av1Depack uses gortsplib's AV1 RTP decoder and stores temporal units in the low-overhead
// bitstream format (every OBU with its size), as MP4 and Matroska want.
type av1Depack struct {
	noHold
	dec     rtpav1.Decoder
	cfg     codecConfig
	changed bool
	waitKey bool
	started bool
	f       frame
}

func (a *av1Depack) write(p *sfu.Packet, ext int64, lost bool, emit func(*frame)) bool {
	if !a.started || lost {
		a.started, a.waitKey = true, true
	}
	tu, err := a.dec.Decode(rtpPacket(p))
	if err != nil {
		bad := decodeErr(err, rtpav1.ErrMorePacketsNeeded, rtpav1.ErrNonStartingPacketAndNoPrevious)
		if bad {
			a.waitKey = true
		}
		return !bad
	}
	key := av1.IsRandomAccess2(tu)
	if key {
		for _, obu := range tu {
			var oh av1.OBUHeader
			if oh.Unmarshal(obu) == nil && oh.Type == av1.OBUTypeSequenceHeader && !bytes.Equal(obu, a.cfg.av1SeqHeader) {
				var sh av1.SequenceHeader
				if sh.Unmarshal(obu) == nil {
					a.cfg.av1SeqHeader = append([]byte(nil), obu...)
					a.cfg.width, a.cfg.height = sh.Width(), sh.Height()
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
	a.f = frame{pts: ext, dts: ext, key: key, data: data}
	emit(&a.f)
	return true
}

func (a *av1Depack) config() (codecConfig, bool) {
	c := a.changed
	a.changed = false
	return a.cfg, c
}

// opusDepack: one Opus packet per RTP packet (RFC 7587).
type opusDepack struct {
	noHold
	cfg codecConfig
	f   frame
}

func (o *opusDepack) write(p *sfu.Packet, ext int64, _ bool, emit func(*frame)) bool {
	if len(p.Payload) == 0 {
		return false
	}
	d := opus.PacketDuration2(p.Payload) // in 48 kHz samples
	o.f = frame{pts: ext, dts: ext, key: true, data: p.Payload, dur: d}
	emit(&o.f)
	return true
}

func (o *opusDepack) config() (codecConfig, bool) { return o.cfg, false }

// g711Depack: PCMU/PCMA samples (RFC 3551), decoded to 16-bit PCM for the containers.
type g711Depack struct {
	noHold
	alaw bool
	cfg  codecConfig
	f    frame
}

func (g *g711Depack) write(p *sfu.Packet, ext int64, _ bool, emit func(*frame)) bool {
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
	g.f = frame{pts: ext, dts: ext, key: true, data: pcm, dur: int64(len(p.Payload) / g.cfg.channels)}
	emit(&g.f)
	return true
}

func (g *g711Depack) config() (codecConfig, bool) { return g.cfg, false }

// aacDepack uses gortsplib's RFC 3640 (mpeg4-generic, AAC-hbr) decoder; the configuration comes
// from the track's fmtp.
type aacDepack struct {
	noHold
	dec rtpmpeg4audio.Decoder
	cfg codecConfig
	f   frame
}

func newAACDepack(c sfu.Codec) (*aacDepack, error) {
	params := fmtpParams(c.Fmtp)
	a := &aacDepack{}
	a.dec.SizeLength, a.dec.IndexLength, a.dec.IndexDeltaLength = 13, 3, 3
	if v, err := strconv.Atoi(params["sizelength"]); err == nil {
		a.dec.SizeLength = v
	}
	if v, err := strconv.Atoi(params["indexlength"]); err == nil {
		a.dec.IndexLength = v
	}
	if v, err := strconv.Atoi(params["indexdeltalength"]); err == nil {
		a.dec.IndexDeltaLength = v
	}
	raw, err := hex.DecodeString(params["config"])
	if err != nil || len(raw) == 0 {
		return nil, errors.New("aac: the track's fmtp has no config")
	}
	var asc mpeg4audio.AudioSpecificConfig
	if err := asc.Unmarshal(raw); err != nil {
		return nil, errors.New("aac: invalid config in fmtp")
	}
	a.cfg = codecConfig{aac: &asc, channels: asc.ChannelCount, sampleRate: asc.SampleRate, samplesPerUnit: 1024}
	if asc.FrameLengthFlag {
		a.cfg.samplesPerUnit = 960
	}
	return a, a.dec.Init()
}

func (a *aacDepack) write(p *sfu.Packet, ext int64, _ bool, emit func(*frame)) bool {
	aus, err := a.dec.Decode(rtpPacket(p))
	if err != nil {
		return !decodeErr(err, rtpmpeg4audio.ErrMorePacketsNeeded)
	}
	n := int64(a.cfg.samplesPerUnit)
	for i, au := range aus {
		a.f = frame{pts: ext + int64(i)*n, dts: ext + int64(i)*n, key: true, data: au, dur: n}
		emit(&a.f)
	}
	return true
}

func (a *aacDepack) config() (codecConfig, bool) { return a.cfg, false }

// fmtpParams parses SDP format parameters ("a=1;b=2") with lower-case keys.
func fmtpParams(s string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if ok {
			out[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
		}
	}
	return out
}
