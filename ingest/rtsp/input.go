package rtsp

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpav1"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpfragmented"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph265"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpvp8"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpvp9"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
)

// aacSamplesPerFrame is the length of one AAC access unit in samples (ISO 14496-3).
const aacSamplesPerFrame = 1024

// input turns the RTP packets of one source format (a camera's or an RTSP publisher's) into the
// packets of one sfu track: video and AAC are depacketized and packetized again by media.Writer
// (MTU-sized packets, parameter sets before every keyframe, LATM normalized to MPEG4-GENERIC);
// G.711, G.722 and Opus pass through.
//
// newInput builds it before the track exists; attach gives it the track once the session is
// admitted. onRTP runs on the one goroutine that reads the format's packets (gortsplib calls
// the callbacks of one media serially); onRTCP may run on another; attach and the counters are
// safe for concurrent use.
type input struct {
	media  *description.Media
	format format.Format
	codec  sfu.Codec
	label  string
	width  int
	height int
	params [][]byte // H.265 VPS, SPS, PPS from the SDP (H.264's travel in the fmtp)

	// decode turns one packet into frames for the writer; nil frames with a nil error mean
	// "more packets needed". pass marks formats whose packets are forwarded as they are.
	decode func(pkt *rtp.Packet) ([][][]byte, error)
	pass   bool

	out   atomic.Pointer[output]
	clock func() time.Time
	log   *slog.Logger

	// rebase keeps the timestamps continuous across jumps of the source's clock.
	rebase *media.Rebaser

	// Producer-owned.
	lastSPS    []byte
	jumpLogged time.Time // when a clock jump was last logged
	firstSeen  bool
	prevTS     uint32 // timestamp and marker of the previous packet (video)
	prevMarker bool
	havePrev   bool

	// Counters.
	lastPacketAt atomic.Int64 // unix nanoseconds of the last RTP packet
	packets      atomic.Uint64
	decodeErrors atomic.Uint64
	realSR       atomic.Bool
	clockJumps   atomic.Uint64 // jumps of the source's RTP clock or of its sender reports' NTP time

	// The RTCP goroutine's: the previous sender report (its NTP time as sent, and when it
	// came) and the correction applied to later reports' NTP time after a jump.
	srSeen    bool
	srNTP     time.Time
	srAt      time.Time
	ntpOff    time.Duration
	ntpLogged time.Time
}

// output is where an attached input writes.
type output struct {
	track  *sfu.Track
	writer *media.Writer
}

// errUnsupported reports a source format sluice does not publish.
type errUnsupported struct{ codec string }

func (e *errUnsupported) Error() string { return "codec " + e.codec + " is not supported" }

// codecLabel names a source format in the ingest status and logs.
func codecLabel(f format.Format) string {
	if g, ok := f.(*format.Generic); ok {
		return g.RTPMap()
	}
	return f.Codec()
}

// newInput prepares the conversion of format f of media m. It fails with *errUnsupported for
// codecs that sluice does not publish and with another error for a format whose parameters are
// unusable; it never panics on what came from the network.
func newInput(m *description.Media, f format.Format, clock func() time.Time) (*input, error) {
	in := &input{media: m, format: f, label: string(m.Type), clock: clock, log: slog.New(slog.DiscardHandler)}
	pt := f.PayloadType()
	switch f := f.(type) {
	case *format.H264:
		sps, pps := f.SafeParams()
		in.codec = media.H264Codec(sps, pps, pt)
		in.width, in.height = media.SPSSize(sfu.CodecH264, sps)
		dec, err := f.CreateDecoder()
		if err != nil {
			return nil, err
		}
		in.decode = nalus(dec.Decode, rtph264.ErrMorePacketsNeeded, rtph264.ErrNonStartingPacketAndNoPrevious)
	case *format.H265:
		vps, sps, pps := f.SafeParams()
		in.codec = media.H265Codec(vps, sps, pps, pt)
		in.width, in.height = media.SPSSize(sfu.CodecH265, sps)
		for _, p := range [][]byte{vps, sps, pps} {
			if len(p) > 0 {
				in.params = append(in.params, p)
			}
		}
		dec, err := f.CreateDecoder()
		if err != nil {
			return nil, err
		}
		in.decode = nalus(dec.Decode, rtph265.ErrMorePacketsNeeded, rtph265.ErrNonStartingPacketAndNoPrevious)
	case *format.VP8:
		in.codec = sfu.Codec{Name: sfu.CodecVP8, ClockRate: 90000, PayloadType: pt}
		dec, err := f.CreateDecoder()
		if err != nil {
			return nil, err
		}
		in.decode = frame(dec.Decode, rtpvp8.ErrMorePacketsNeeded, rtpvp8.ErrNonStartingPacketAndNoPrevious)
	case *format.VP9:
		in.codec = sfu.Codec{Name: sfu.CodecVP9, ClockRate: 90000, PayloadType: pt}
		dec, err := f.CreateDecoder()
		if err != nil {
			return nil, err
		}
		in.decode = frame(dec.Decode, rtpvp9.ErrMorePacketsNeeded, rtpvp9.ErrNonStartingPacketAndNoPrevious)
	case *format.AV1:
		in.codec = sfu.Codec{Name: sfu.CodecAV1, ClockRate: 90000, PayloadType: pt}
		dec, err := f.CreateDecoder()
		if err != nil {
			return nil, err
		}
		in.decode = nalus(dec.Decode, rtpav1.ErrMorePacketsNeeded, rtpav1.ErrNonStartingPacketAndNoPrevious)
	case *format.MPEG4Audio:
		if err := in.aacGeneric(f); err != nil {
			return nil, err
		}
	case *format.MPEG4AudioLATM:
		if err := in.aacLATM(f); err != nil {
			return nil, err
		}
	case *format.G711:
		name := sfu.CodecPCMA
		if f.MULaw {
			name = sfu.CodecPCMU
		}
		in.codec = sfu.Codec{Name: name, ClockRate: uint32(f.SampleRate), Channels: uint16(f.ChannelCount), PayloadType: pt}
		in.pass = true
	case *format.G722:
		in.codec = sfu.Codec{Name: sfu.CodecG722, ClockRate: 8000, Channels: 1, PayloadType: pt}
		in.pass = true
	case *format.Opus:
		// RFC 7587 §7: always opus/48000/2 on the wire, whatever the channel count.
		in.codec = sfu.Codec{Name: sfu.CodecOpus, ClockRate: 48000, Channels: 2, PayloadType: pt}
		in.pass = true
	default:
		return nil, &errUnsupported{codec: codecLabel(f)}
	}
	if in.codec.ClockRate == 0 {
		return nil, fmt.Errorf("%s: no clock rate", in.codec.Name)
	}
	in.rebase = media.NewRebaser(in.codec.ClockRate) // the format's own ClockRate may panic on a bad config
	return in, nil
}

func (in *input) aacGeneric(f *format.MPEG4Audio) error {
	if f.Config == nil {
		return errors.New("mpeg4-generic: no config in the SDP")
	}
	if f.SizeLength == 0 {
		return errors.New("mpeg4-generic: no sizelength in the SDP")
	}
	cfg, err := f.Config.Marshal()
	if err != nil {
		return fmt.Errorf("mpeg4-generic: %w", err)
	}
	in.codec = media.AACCodec(cfg, f.Config.SampleRate, f.Config.ChannelCount, f.PayloadType())
	dec, err := f.CreateDecoder()
	if err != nil {
		return err
	}
	in.decode = func(pkt *rtp.Packet) ([][][]byte, error) {
		aus, err := dec.Decode(pkt)
		if errors.Is(err, rtpmpeg4audio.ErrMorePacketsNeeded) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return splitAUs(aus), nil
	}
	return nil
}

// aacLATM normalizes MP4A-LATM (RFC 6416) to the one AAC representation of the SFU.
func (in *input) aacLATM(f *format.MPEG4AudioLATM) error {
	if f.CPresent || f.StreamMuxConfig == nil || len(f.StreamMuxConfig.Programs) == 0 ||
		len(f.StreamMuxConfig.Programs[0].Layers) == 0 || f.StreamMuxConfig.Programs[0].Layers[0].AudioSpecificConfig == nil {
		return &errUnsupported{codec: "MP4A-LATM with in-band configuration (cpresent=1)"}
	}
	asc := f.StreamMuxConfig.Programs[0].Layers[0].AudioSpecificConfig
	cfg, err := asc.Marshal()
	if err != nil {
		return fmt.Errorf("mp4a-latm: %w", err)
	}
	in.codec = media.AACCodec(cfg, asc.SampleRate, asc.ChannelCount, f.PayloadType())
	dec, err := f.CreateDecoder()
	if err != nil {
		return err
	}
	smc := f.StreamMuxConfig
	in.decode = func(pkt *rtp.Packet) ([][][]byte, error) {
		payload, err := dec.Decode(pkt)
		if errors.Is(err, rtpfragmented.ErrMorePacketsNeeded) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		el := mpeg4audio.AudioMuxElement{StreamMuxConfig: smc}
		if err := el.Unmarshal(payload); err != nil {
			return nil, fmt.Errorf("mp4a-latm: %w", err)
		}
		var aus [][]byte
		for _, sub := range el.Payloads {
			if len(sub) > 0 && len(sub[0]) > 0 && len(sub[0][0]) > 0 {
				aus = append(aus, sub[0][0])
			}
		}
		return splitAUs(aus), nil
	}
	return nil
}

// splitAUs makes one frame per AAC access unit.
func splitAUs(aus [][]byte) [][][]byte {
	out := make([][][]byte, 0, len(aus))
	for _, au := range aus {
		out = append(out, [][]byte{au})
	}
	return out
}

// nalus adapts a decoder returning one access unit (NAL units, OBUs) to decode, treating its
// "wait for more packets" errors as no frame.
func nalus(dec func(*rtp.Packet) ([][]byte, error), benign ...error) func(*rtp.Packet) ([][][]byte, error) {
	return func(pkt *rtp.Packet) ([][][]byte, error) {
		au, err := dec(pkt)
		if isAny(err, benign) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return [][][]byte{au}, nil
	}
}

// frame adapts a decoder returning one frame (VP8, VP9).
func frame(dec func(*rtp.Packet) ([]byte, error), benign ...error) func(*rtp.Packet) ([][][]byte, error) {
	return func(pkt *rtp.Packet) ([][][]byte, error) {
		f, err := dec(pkt)
		if isAny(err, benign) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return [][][]byte{{f}}, nil
	}
}

func isAny(err error, targets []error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

// trackSpec describes the sfu track of the input.
func (in *input) trackSpec() sfu.TrackSpec {
	return sfu.TrackSpec{
		Codec:    in.codec,
		Source:   sfu.SourceIngest,
		Name:     in.label,
		Width:    in.width,
		Height:   in.height,
		CacheGOP: in.codec.Kind() == sfu.KindVideo, // an RTSP source cannot be asked for a keyframe
	}
}

// attach starts writing to t. It is called once, by the session's goroutine.
func (in *input) attach(t *sfu.Track) error {
	out := &output{track: t}
	if !in.pass {
		w, err := media.NewWriter(t)
		if err != nil {
			return err
		}
		if len(in.params) > 0 {
			w.SetParams(in.params)
		}
		out.writer = w
	}
	in.out.Store(out)
	return nil
}

// onRTP handles one packet of the format; called serially by the reading goroutine.
func (in *input) onRTP(pkt *rtp.Packet) {
	now := in.clock()
	in.lastPacketAt.Store(now.UnixNano())
	in.packets.Add(1)
	out := in.out.Load()
	if out == nil {
		return // not admitted yet
	}
	ts, jump := in.rebase.Rebase(pkt.Timestamp, now)
	if jump != 0 {
		in.clockJumps.Add(1)
		if now.Sub(in.jumpLogged) >= 10*time.Second {
			in.jumpLogged = now
			in.log.Warn("the source's RTP clock jumped; timestamps continue from the arrival time",
				"jump", jump.Round(time.Millisecond), "jumps", in.clockJumps.Load())
		}
	}
	if !in.firstSeen {
		in.firstSeen = true
		if !in.realSR.Load() {
			// Until the source's first RTCP sender report, map its clock to the arrival time so
			// that recorders can align the tracks from the start.
			out.track.SetSenderReport(sfu.SenderReport{RTPTime: ts, NTPTime: now})
		}
	}
	if in.pass {
		in.forward(out.track, ts, pkt)
		return
	}
	video := in.codec.Kind() == sfu.KindVideo
	base := ts
	if video {
		// A decoder also ends an access unit when the timestamp changes after a packet without
		// the marker bit (cameras that never set it): what it returns then belongs to the
		// previous timestamp.
		if in.havePrev && ts != in.prevTS && !in.prevMarker {
			base = in.prevTS
		}
		in.prevTS, in.prevMarker, in.havePrev = ts, pkt.Marker, true
	}
	frames, err := in.decode(pkt)
	if err != nil {
		in.decodeErrors.Add(1)
		return
	}
	for i, f := range frames {
		if video {
			in.watchSize(out.track, f)
		}
		ts := base
		if in.codec.Name == sfu.CodecAAC {
			ts += uint32(i * aacSamplesPerFrame)
		}
		if err := out.writer.Write(ts, f); err != nil {
			in.decodeErrors.Add(1)
		}
	}
}

// forward writes a pass-through packet with timestamp ts; a G.711 packet too large for the
// WebRTC MTU is split (one byte per sample and channel, RFC 3551 §4.5.14), anything else too
// large is dropped.
func (in *input) forward(t *sfu.Track, ts uint32, pkt *rtp.Packet) {
	if len(pkt.Payload) == 0 {
		return
	}
	if len(pkt.Payload) <= media.MaxPayload {
		h := pkt.Header
		h.Timestamp = ts
		t.WritePacket(&sfu.Packet{Header: h, Payload: pkt.Payload})
		return
	}
	if in.codec.Name != sfu.CodecPCMU && in.codec.Name != sfu.CodecPCMA {
		in.decodeErrors.Add(1)
		return
	}
	ch := max(int(in.codec.Channels), 1)
	step := media.MaxPayload / ch * ch
	for off := 0; off < len(pkt.Payload); off += step {
		end := min(off+step, len(pkt.Payload))
		h := pkt.Header
		h.Timestamp = ts + uint32(off/ch) //nolint:gosec // off is below the payload size
		h.Marker = false
		t.WritePacket(&sfu.Packet{Header: h, Payload: pkt.Payload[off:end]})
	}
}

// watchSize reports a new resolution when an access unit carries a changed SPS.
func (in *input) watchSize(t *sfu.Track, au [][]byte) {
	for _, n := range au {
		if len(n) == 0 {
			continue
		}
		var w, h int
		switch in.codec.Name {
		case sfu.CodecH264:
			if n[0]&0x1f != 7 || bytes.Equal(n, in.lastSPS) {
				continue
			}
			w, h = media.SPSSize(sfu.CodecH264, n)
		case sfu.CodecH265:
			if (n[0]>>1)&0x3f != 33 || bytes.Equal(n, in.lastSPS) {
				continue
			}
			w, h = media.SPSSize(sfu.CodecH265, n)
		default:
			return
		}
		in.lastSPS = bytes.Clone(n)
		if w > 0 && h > 0 {
			_ = t.Participant().SetTrackSize(t, w, h) // track.updated when it changed
		}
	}
}

// onRTCP keeps the source's sender reports, which map its RTP clock to wall time so that
// recorders align audio and video (RFC 3550 §6.4.1). The RTP time is moved into the rebased
// clock of the packets; an NTP time that moved more than media.MaxClockSkew unlike the time
// between the reports is a jump of the source's wall clock, and is taken out of this report
// and the next ones.
func (in *input) onRTCP(pkt rtcp.Packet) {
	sr, ok := pkt.(*rtcp.SenderReport)
	if !ok {
		return
	}
	out := in.out.Load()
	if out == nil {
		return
	}
	in.realSR.Store(true)
	now, ntp := in.clock(), sfu.FromNTP(sr.NTPTime)
	if in.srSeen {
		if d := ntp.Sub(in.srNTP) - now.Sub(in.srAt); d > media.MaxClockSkew || d < -media.MaxClockSkew {
			in.ntpOff -= d
			in.clockJumps.Add(1)
			if now.Sub(in.ntpLogged) >= 10*time.Second {
				in.ntpLogged = now
				in.log.Warn("the source's sender reports' NTP time jumped; it is corrected by the time between reports",
					"jump", d.Round(time.Millisecond), "jumps", in.clockJumps.Load())
			}
		}
	}
	in.srSeen, in.srNTP, in.srAt = true, ntp, now
	out.track.SetSenderReport(sfu.SenderReport{RTPTime: sr.RTPTime + in.rebase.Offset(), NTPTime: ntp.Add(in.ntpOff)})
}
