package rtmp

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"sync/atomic"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/av1"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/vp9"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
	"github.com/sluice-media/sluice/sfu/rtmpproto"
)

// RTP payload types of the tracks (the WebRTC edge rewrites them to the negotiated ones).
const (
	ptVideo = 96
	ptAAC   = 97
	ptOpus  = 111
)

// publisher turns the FLV tags of one publish session into the participant's tracks: one
// video and one audio track, packetized by sfu/media, on a clock shared by both. It is owned
// by the connection goroutine, the single producer of its tracks.
type publisher struct {
	c      *conn
	p      *sfu.Participant
	clock  sessionClock
	t0     time.Time // wall time of the session's first timestamp: RTP time 0 of every track
	stream *sfu.Stream
	video  *videoOut
	audio  *audioOut
	meta   rtmpproto.StreamInfo

	scratch []byte   // the message being read; reused
	units   [][]byte // NAL units or OBUs of the frame being written; reused

	unsupported map[string]bool
	frames      uint64 // video frames written
	// dropped counts the frames that could not be used (before a sequence header, refused by
	// the packetizer); written by the connection goroutine, read by stream.stats.
	dropped atomic.Int64
}

type videoOut struct {
	track      *sfu.Track
	w          *media.Writer
	codec      string
	lengthSize int
	av1Seq     []byte   // AV1 sequence header OBU from the configuration record
	params     [][]byte // the parameter sets the resolution was last read from
	width      int
	height     int
}

type audioOut struct {
	track  *sfu.Track
	w      *media.Writer
	codec  string
	config []byte
	clock  audioClock
}

func newPublisher(c *conn, p *sfu.Participant) *publisher {
	return &publisher{c: c, p: p, unsupported: map[string]bool{}}
}

// read copies the message payload into the reusable scratch buffer.
func (pub *publisher) read(r io.Reader) ([]byte, error) {
	b := pub.scratch[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if errors.Is(err, io.EOF) {
			pub.scratch = b
			return b, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// at returns the session time (ms) of an RTMP timestamp, fixing the wall time of the first.
func (pub *publisher) at(ts uint32) int64 {
	if !pub.clock.started {
		pub.t0 = pub.c.s.clock()
	}
	return pub.clock.at(ts)
}

// onVideo handles one video message.
func (pub *publisher) onVideo(ts uint32, r io.Reader) error {
	body, err := pub.read(r)
	if err != nil {
		return err
	}
	tag, err := rtmpproto.ParseVideoTag(body)
	if err != nil {
		return err
	}
	ms := pub.at(ts)
	switch tag.Kind {
	case rtmpproto.PacketSequenceStart:
		if err := pub.videoConfig(tag); err != nil {
			return err
		}
	case rtmpproto.PacketFrame:
		if err := pub.videoFrame(tag, ms); err != nil {
			return err
		}
	case rtmpproto.PacketSequenceEnd, rtmpproto.PacketOther: // end of sequence, or a command frame: nothing to play
	}
	return pub.startStream()
}

func (pub *publisher) videoConfig(tag rtmpproto.VideoTag) error {
	if tag.Codec == "" {
		pub.unsupportedCodec("video", tag.Format)
		return nil
	}
	codec := sfu.Codec{Name: tag.Codec, ClockRate: 90000, PayloadType: ptVideo}
	var params [][]byte
	var av1Seq []byte
	lengthSize := 4
	width, height := 0, 0
	switch tag.Codec {
	case sfu.CodecH264, sfu.CodecH265:
		parse := rtmpproto.ParseAVCC
		if tag.Codec == sfu.CodecH265 {
			parse = rtmpproto.ParseHVCC
		}
		cfg, err := parse(tag.Data)
		if err != nil {
			return err
		}
		params, lengthSize = media.CloneNALUs(cfg.Params), cfg.LengthSize
		width, height = media.ParamsSize(tag.Codec, params)
		if tag.Codec == sfu.CodecH264 {
			codec = media.H264Codec(media.ParamSet(sfu.CodecH264, params, media.H264SPS), media.ParamSet(sfu.CodecH264, params, media.H264PPS), ptVideo)
		}
	case sfu.CodecAV1:
		cfgOBUs, err := rtmpproto.ParseAV1C(tag.Data)
		if err != nil {
			return err
		}
		obus, err := rtmpproto.SplitOBUs(nil, cfgOBUs)
		if err != nil {
			return err
		}
		for _, o := range obus {
			if (o[0]>>3)&0x0f == 1 { // OBU_SEQUENCE_HEADER
				av1Seq = o
				var sh av1.SequenceHeader
				if sh.Unmarshal(o) == nil {
					width, height = sh.Width(), sh.Height()
				}
			}
		}
	}
	v := pub.video
	if v != nil && v.codec == tag.Codec {
		// A new configuration of the same codec (resolution change, encoder restart): the
		// track goes on with the new parameter sets, sent before every keyframe from now.
		if params != nil {
			v.w.SetParams(params)
			v.params = params
		}
		v.lengthSize = lengthSize
		if av1Seq != nil {
			v.av1Seq = av1Seq
		}
		pub.setVideoSize(width, height)
		return nil
	}
	return pub.publishVideo(codec, params, lengthSize, av1Seq, width, height)
}

// publishVideo publishes the video track (replacing one of another codec).
func (pub *publisher) publishVideo(codec sfu.Codec, params [][]byte, lengthSize int, av1Seq []byte, width, height int) error {
	if old := pub.video; old != nil {
		pub.video = nil
		if err := pub.p.Unpublish(old.track, sfu.ReasonUnpublished); err != nil && !sfu.IsClosed(err) {
			return err
		}
	}
	if width == 0 {
		width, height = pub.meta.Width, pub.meta.Height
	}
	track, err := pub.p.Publish(sfu.TrackSpec{Codec: codec, Name: "video", Width: width, Height: height, CacheGOP: true})
	if err != nil {
		return err
	}
	track.SetSenderReport(sfu.SenderReport{RTPTime: 0, NTPTime: pub.t0})
	w, err := media.NewWriter(track)
	if err != nil {
		return err
	}
	if params != nil {
		w.SetParams(params)
	}
	pub.video = &videoOut{track: track, w: w, codec: codec.Name, lengthSize: lengthSize, av1Seq: av1Seq,
		params: params, width: width, height: height}
	pub.c.log.Info("rtmp video track", "codec", codec.Name, "width", width, "height", height)
	return nil
}

func (pub *publisher) videoFrame(tag rtmpproto.VideoTag, ms int64) error {
	if tag.Codec == "" {
		pub.unsupportedCodec("video", tag.Format)
		return nil
	}
	v := pub.video
	if (v == nil || v.codec != tag.Codec) && tag.Keyframe && (tag.Codec == sfu.CodecVP9 || tag.Codec == sfu.CodecAV1) {
		// VP9 and AV1 carry what a decoder needs in-band: no configuration record is needed.
		if err := pub.publishVideo(sfu.Codec{Name: tag.Codec, ClockRate: 90000, PayloadType: ptVideo}, nil, 4, nil, 0, 0); err != nil {
			return err
		}
		v = pub.video
	}
	if v == nil || v.codec != tag.Codec || len(tag.Data) == 0 {
		pub.dropped.Add(1)
		return nil
	}
	// The packetizer may keep slices of the frame in the packets it writes, and the
	// payload buffer is reused: the frame gets its own copy.
	frame := bytes.Clone(tag.Data)
	var err error
	units := pub.units[:0]
	switch v.codec {
	case sfu.CodecH264, sfu.CodecH265:
		units, err = rtmpproto.SplitNALUs(units, frame, v.lengthSize)
	case sfu.CodecAV1:
		if tag.Keyframe && v.av1Seq != nil {
			units = append(units, v.av1Seq)
		}
		units, err = rtmpproto.SplitOBUs(units, frame)
		units = dedupeAV1Seq(units)
		if err == nil && tag.Keyframe {
			pub.av1Size(units)
		}
	case sfu.CodecVP9:
		units = append(units, frame)
		if tag.Keyframe {
			var h vp9.Header
			if h.Unmarshal(frame) == nil {
				pub.setVideoSize(h.Width(), h.Height())
			}
		}
	}
	pub.units = units[:0]
	if err != nil {
		return err
	}
	if len(units) == 0 {
		pub.dropped.Add(1)
		return nil
	}
	pts := (ms + int64(tag.CTS)) * 90 // RTP time is the presentation time; FLV knows the decode time
	if err := v.w.WriteDTS(uint32(pts), tag.CTS*90, units); err != nil {
		if n := pub.dropped.Add(1); n == 1 || n%1000 == 0 {
			pub.c.log.Warn("rtmp video frame refused by the packetizer", "err", err, "dropped", n)
		}
		return nil
	}
	pub.frames++
	clear(units)
	if tag.Keyframe && (v.codec == sfu.CodecH264 || v.codec == sfu.CodecH265) {
		// Parameter sets may change in-band: follow the resolution.
		if ps := v.w.Params(); !slices.EqualFunc(ps, v.params, bytes.Equal) {
			v.params = ps
			pub.setVideoSize(media.ParamsSize(v.codec, ps))
		}
	}
	return nil
}

// av1Size follows the resolution of the sequence header in a temporal unit.
func (pub *publisher) av1Size(obus [][]byte) {
	for _, o := range obus {
		if (o[0]>>3)&0x0f != 1 {
			continue
		}
		var sh av1.SequenceHeader
		if sh.Unmarshal(o) == nil {
			pub.setVideoSize(sh.Width(), sh.Height())
		}
		return
	}
}

// dedupeAV1Seq drops the sequence header put first when the temporal unit has its own.
func dedupeAV1Seq(units [][]byte) [][]byte {
	if len(units) < 2 || (units[0][0]>>3)&0x0f != 1 {
		return units
	}
	for _, u := range units[1:] {
		if (u[0]>>3)&0x0f == 1 {
			return units[1:]
		}
	}
	return units
}

func (pub *publisher) setVideoSize(width, height int) {
	v := pub.video
	if v == nil || width <= 0 || height <= 0 || (width == v.width && height == v.height) {
		return
	}
	v.width, v.height = width, height
	_ = pub.p.SetTrackSize(v.track, width, height)
}

// onAudio handles one audio message.
func (pub *publisher) onAudio(ts uint32, r io.Reader) error {
	body, err := pub.read(r)
	if err != nil {
		return err
	}
	tag, err := rtmpproto.ParseAudioTag(body)
	if err != nil {
		return err
	}
	ms := pub.at(ts)
	if tag.Codec == "" {
		if tag.Kind == rtmpproto.PacketFrame || tag.Kind == rtmpproto.PacketSequenceStart {
			pub.unsupportedCodec("audio", tag.Format)
		}
		return pub.startStream()
	}
	switch tag.Kind {
	case rtmpproto.PacketSequenceStart:
		if err := pub.audioConfig(tag); err != nil {
			return err
		}
	case rtmpproto.PacketFrame:
		a := pub.audio
		if a == nil && tag.Codec == sfu.CodecOpus { // Opus needs no configuration
			if err := pub.publishAudio(sfu.Codec{Name: sfu.CodecOpus, ClockRate: 48000, Channels: 2, PayloadType: ptOpus}, nil, 0); err != nil {
				return err
			}
			a = pub.audio
		}
		if a == nil || a.codec != tag.Codec || len(tag.Data) == 0 {
			break
		}
		frame := bytes.Clone(tag.Data)
		rtpTS := a.clock.at(ms)
		if err := a.w.Write(uint32(rtpTS), [][]byte{frame}); err != nil {
			pub.dropped.Add(1)
		}
	case rtmpproto.PacketSequenceEnd, rtmpproto.PacketOther: // nothing to play
	}
	return pub.startStream()
}

func (pub *publisher) audioConfig(tag rtmpproto.AudioTag) error {
	var codec sfu.Codec
	frame := 0
	switch tag.Codec {
	case sfu.CodecAAC:
		var asc mpeg4audio.AudioSpecificConfig
		if err := asc.Unmarshal(tag.Data); err != nil {
			pub.unsupportedCodec("audio", "aac ("+err.Error()+")")
			return nil
		}
		channels := asc.ChannelCount
		if channels == 0 {
			channels = 2 // defined by a program config element
		}
		frame = mpeg4audio.SamplesPerAccessUnit
		if asc.FrameLengthFlag {
			frame = 960
		}
		codec = media.AACCodec(bytes.Clone(tag.Data), asc.SampleRate, channels, ptAAC)
	case sfu.CodecOpus:
		channels := 2
		if len(tag.Data) >= 19 && string(tag.Data[:8]) == "OpusHead" && tag.Data[9] == 1 {
			channels = 1
		}
		codec = sfu.Codec{Name: sfu.CodecOpus, ClockRate: 48000, Channels: uint16(channels), PayloadType: ptOpus}
	}
	if a := pub.audio; a != nil && a.track.Codec() == codec {
		return nil // the same configuration again
	}
	return pub.publishAudio(codec, tag.Data, frame)
}

// publishAudio publishes the audio track (replacing one of another configuration).
func (pub *publisher) publishAudio(codec sfu.Codec, config []byte, frame int) error {
	if old := pub.audio; old != nil {
		pub.audio = nil
		if err := pub.p.Unpublish(old.track, sfu.ReasonUnpublished); err != nil && !sfu.IsClosed(err) {
			return err
		}
	}
	track, err := pub.p.Publish(sfu.TrackSpec{Codec: codec, Name: "audio"})
	if err != nil {
		return err
	}
	track.SetSenderReport(sfu.SenderReport{RTPTime: 0, NTPTime: pub.t0})
	w, err := media.NewWriter(track)
	if err != nil {
		return err
	}
	pub.audio = &audioOut{track: track, w: w, codec: codec.Name, config: bytes.Clone(config),
		clock: newAudioClock(int(codec.ClockRate), frame)}
	pub.c.log.Info("rtmp audio track", "codec", codec.Name, "rate", codec.ClockRate, "channels", codec.Channels)
	return nil
}

// startStream reports the publish session once its first media message has arrived
// (stream.publishing).
func (pub *publisher) startStream() error {
	if pub.stream != nil {
		return nil
	}
	// onMetaData announces the track set (a codec id per track), when the encoder sends it
	expect := 0
	if pub.meta.VideoCodecID > 0 {
		expect++
	}
	if pub.meta.AudioCodecID > 0 {
		expect++
	}
	st, err := pub.p.StartStream(sfu.StreamSpec{Direction: sfu.DirectionPublish, Protocol: pub.c.protocol, RemoteAddr: pub.c.remote,
		ExpectTracks: expect, Stats: pub.stats})
	if err != nil {
		return err
	}
	pub.stream = st
	return nil
}

// stats returns the RTMP figures of stream.stats: the bytes read from the connection and the
// frames dropped. Called from the hub's goroutine.
func (pub *publisher) stats() sfu.ProtocolStats {
	bytes, dropped := pub.c.bytesIn.Load(), pub.dropped.Load()
	return sfu.ProtocolStats{Bytes: &bytes, DroppedFrames: &dropped}
}

// setMetadata records onMetaData; its resolution stands until a sequence header gives one.
func (pub *publisher) setMetadata(md rtmpproto.StreamInfo) {
	pub.meta = md
	pub.c.log.Info("rtmp stream metadata", "encoder", md.Encoder, "width", md.Width, "height", md.Height,
		"framerate", md.FrameRate, "videocodecid", md.VideoCodecID, "audiocodecid", md.AudioCodecID)
	if v := pub.video; v != nil && v.width == 0 {
		pub.setVideoSize(md.Width, md.Height)
	}
}

func (pub *publisher) unsupportedCodec(kind, format string) {
	if pub.unsupported[format] {
		return
	}
	pub.unsupported[format] = true
	pub.c.log.Warn("rtmp publisher sends a codec that cannot be published; it is ignored", "kind", kind, "codec", format)
	if id := pub.c.sess.ingestID(); id != "" {
		if s, ok := pub.c.s.ingests.(interface{ SetUnsupported(string, []string) }); ok {
			var list []string
			for f := range pub.unsupported {
				list = append(list, f)
			}
			s.SetUnsupported(id, list)
		}
	}
}

// summary returns log attributes of the session's media.
func (pub *publisher) summary() []any {
	attrs := []any{"video_frames", pub.frames}
	if n := pub.dropped.Load(); n > 0 {
		attrs = append(attrs, "dropped", n)
	}
	if pub.clock.jumps > 0 {
		attrs = append(attrs, "timestamp_jumps", pub.clock.jumps)
	}
	return attrs
}
