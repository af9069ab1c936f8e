package srt

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
)

// RTP payload types of the tracks (the WebRTC edge rewrites them to the negotiated ones).
const (
	ptVideo = 96
	ptAAC   = 97
	ptOpus  = 111
)

// publisher turns the MPEG-TS of one publish session (ISO/IEC 13818-1) into the participant's
// tracks: the first video (H.264, H.265) and the first audio (AAC, Opus) elementary stream,
// packetized by sfu/media. Every timestamp goes through one decoder, so that tracks share RTP
// time 0 at the session's first timestamp. It is owned by the session's goroutine, the single
// producer of its tracks.
type publisher struct {
	s    *Server
	pub  *ingest.Publisher
	conn gosrt.Conn
	log  *slog.Logger

	td     mpegts.TimeDecoder
	t0     time.Time // wall time of the first timestamp: RTP time 0 of every track
	stream *sfu.Stream
	video  *videoOut
	audio  *audioOut

	unsupported []string
	frames      uint64 // video frames written
	dropped     uint64 // frames that could not be used (before parameter sets, refused by the packetizer)
	decodeErrs  uint64 // MPEG-TS errors the reader skipped
}

type videoOut struct {
	track  *sfu.Track
	w      *media.Writer
	codec  string
	params [][]byte // the parameter sets the resolution was last read from
}

type audioOut struct {
	track *sfu.Track
	w     *media.Writer
	rate  int64
}

func newPublisher(s *Server, pub *ingest.Publisher, conn gosrt.Conn, log *slog.Logger) *publisher {
	return &publisher{s: s, pub: pub, conn: conn, log: log}
}

// run reads MPEG-TS from r until it fails.
func (pub *publisher) run(r io.Reader) (err error) {
	defer func() {
		if v := recover(); v != nil {
			pub.s.panics.Add(1)
			pub.log.Error("BUG: panic in the srt session", "panic", v)
			err = fmt.Errorf("internal error: %v", v)
		}
	}()
	rd := &mpegts.Reader{R: r}
	if err := rd.Initialize(); err != nil {
		return err
	}
	rd.OnDecodeError(func(err error) {
		if pub.decodeErrs++; pub.decodeErrs == 1 || pub.decodeErrs%1000 == 0 {
			pub.log.Warn("srt: MPEG-TS error skipped", "err", err, "count", pub.decodeErrs)
		}
	})
	var hasVideo, hasAudio bool
	for _, tr := range rd.Tracks() {
		switch c := tr.Codec.(type) {
		case *mpegts.CodecH264:
			if !hasVideo {
				hasVideo = true
				rd.OnDataH264(tr, func(pts, _ int64, au [][]byte) error { return pub.onVideo(sfu.CodecH264, pts, au) })
			}
		case *mpegts.CodecH265:
			if !hasVideo {
				hasVideo = true
				rd.OnDataH265(tr, func(pts, _ int64, au [][]byte) error { return pub.onVideo(sfu.CodecH265, pts, au) })
			}
		case *mpegts.CodecMPEG4Audio:
			if !hasAudio {
				hasAudio = true
				if err := pub.publishAAC(&c.Config); err != nil {
					return err
				}
				rd.OnDataMPEG4Audio(tr, pub.onAAC)
			}
		case *mpegts.CodecOpus:
			if !hasAudio {
				hasAudio = true
				if err := pub.publishOpus(c.ChannelCount); err != nil {
					return err
				}
				rd.OnDataOpus(tr, pub.onOpus)
			}
		default:
			pub.unsupportedCodec(fmt.Sprintf("%T", tr.Codec))
		}
	}
	if !hasVideo && !hasAudio {
		return errors.New("the MPEG-TS carries no H.264, H.265, AAC or Opus stream")
	}
	for {
		if err := rd.Read(); err != nil {
			return err
		}
	}
}

// rtpTime returns the time of an MPEG-TS timestamp since the session's first, in 90 kHz
// units, fixing the wall time of the first (RTP time 0 of the tracks published so far and later).
func (pub *publisher) rtpTime(pts int64) int64 {
	if pub.t0.IsZero() {
		pub.t0 = pub.s.hub.Now()
		if pub.audio != nil {
			pub.audio.track.SetSenderReport(sfu.SenderReport{RTPTime: 0, NTPTime: pub.t0})
		}
	}
	return pub.td.Decode(pts)
}

func (pub *publisher) onVideo(codec string, pts int64, au [][]byte) error {
	ts := pub.rtpTime(pts)
	v := pub.video
	if v == nil {
		params := media.ParamSets(codec, au)
		if params == nil {
			pub.dropped++ // a decoder cannot start before the parameter sets
			return nil
		}
		if err := pub.publishVideo(codec, params); err != nil {
			return err
		}
		v = pub.video
	}
	if err := v.w.Write(uint32(ts), au); err != nil {
		if pub.dropped++; pub.dropped == 1 || pub.dropped%1000 == 0 {
			pub.log.Warn("srt video frame refused by the packetizer", "err", err, "dropped", pub.dropped)
		}
		return nil
	}
	pub.frames++
	if ps := v.w.Params(); !slices.EqualFunc(ps, v.params, bytes.Equal) {
		v.params = ps // parameter sets changed in-band: follow the resolution
		if w, h := media.ParamsSize(codec, ps); w > 0 {
			_ = pub.pub.P.SetTrackSize(v.track, w, h)
		}
	}
	return pub.startStream()
}

func (pub *publisher) publishVideo(codec string, params [][]byte) error {
	c := media.H264Codec(media.ParamSet(codec, params, media.H264SPS), media.ParamSet(codec, params, media.H264PPS), ptVideo)
	if codec == sfu.CodecH265 {
		c = media.H265Codec(media.ParamSet(codec, params, media.H265VPS), media.ParamSet(codec, params, media.H265SPS),
			media.ParamSet(codec, params, media.H265PPS), ptVideo)
	}
	width, height := media.ParamsSize(codec, params)
	track, w, err := pub.publishTrack(sfu.TrackSpec{Codec: c, Name: "video", Width: width, Height: height, CacheGOP: true})
	if err != nil {
		return err
	}
	w.SetParams(params)
	pub.video = &videoOut{track: track, w: w, codec: codec, params: w.Params()}
	pub.log.Info("srt video track", "codec", codec, "width", width, "height", height)
	return nil
}

// publishAAC publishes the audio track as soon as the program shows it, before the first
// video frame: a reader that joins then finds both tracks, and its MPEG-TS program announces
// both from its first table (demuxers that read the first PMT only would miss audio added
// later). An AAC configuration it cannot carry leaves the audio out.
func (pub *publisher) publishAAC(cfg *mpeg4audio.AudioSpecificConfig) error {
	raw, err := cfg.Marshal()
	if err != nil {
		pub.unsupportedCodec("aac (" + err.Error() + ")")
		return nil
	}
	channels := cfg.ChannelCount
	if channels == 0 {
		channels = 2 // defined by a program config element
	}
	return pub.publishAudio(media.AACCodec(raw, cfg.SampleRate, channels, ptAAC))
}

func (pub *publisher) onAAC(pts int64, aus [][]byte) error {
	ts := pub.rtpTime(pts)
	a := pub.audio
	if a == nil {
		return nil // not carried (publishAAC)
	}
	base := ts * a.rate / 90000
	for i, au := range aus {
		if err := a.w.Write(uint32(base+int64(i)*mpeg4audio.SamplesPerAccessUnit), [][]byte{au}); err != nil {
			pub.dropped++
		}
	}
	return pub.startStream()
}

// publishOpus publishes the audio track as soon as the program shows it (see publishAAC).
func (pub *publisher) publishOpus(channels int) error {
	if channels != 1 {
		channels = 2
	}
	return pub.publishAudio(sfu.Codec{Name: sfu.CodecOpus, ClockRate: 48000, Channels: uint16(channels), PayloadType: ptOpus})
}

func (pub *publisher) onOpus(pts int64, pkts [][]byte) error {
	ts := pub.rtpTime(pts)
	a := pub.audio
	at := ts * 48000 / 90000
	for _, p := range pkts {
		if err := a.w.Write(uint32(at), [][]byte{p}); err != nil {
			pub.dropped++
		}
		at += opus.PacketDuration2(p)
	}
	return pub.startStream()
}

func (pub *publisher) publishAudio(c sfu.Codec) error {
	track, w, err := pub.publishTrack(sfu.TrackSpec{Codec: c, Name: "audio"})
	if err != nil {
		return err
	}
	pub.audio = &audioOut{track: track, w: w, rate: int64(c.ClockRate)}
	pub.log.Info("srt audio track", "codec", c.Name, "rate", c.ClockRate, "channels", c.Channels)
	return nil
}

// publishTrack publishes a track whose RTP time 0 is the session's first timestamp, with its
// packetizer. A track published before that timestamp gets its sender report with it (rtpTime).
func (pub *publisher) publishTrack(spec sfu.TrackSpec) (*sfu.Track, *media.Writer, error) {
	track, err := pub.pub.P.Publish(spec)
	if err != nil {
		return nil, nil, err
	}
	if !pub.t0.IsZero() {
		track.SetSenderReport(sfu.SenderReport{RTPTime: 0, NTPTime: pub.t0})
	}
	w, err := media.NewWriter(track)
	return track, w, err
}

// startStream reports the publish session once its first track carries media
// (stream.publishing), with the SRT figures in stream.stats.
func (pub *publisher) startStream() error {
	if pub.stream != nil {
		return nil
	}
	st, err := pub.pub.P.StartStream(sfu.StreamSpec{Direction: sfu.DirectionPublish, Protocol: sfu.ProtocolSRT,
		RemoteAddr: pub.conn.RemoteAddr().String(), Stats: pub.stats})
	if err != nil {
		return err
	}
	pub.stream = st
	return nil
}

// stats reads the connection's SRT statistics as the receiver sees them.
func (pub *publisher) stats() sfu.ProtocolStats { return connStats(pub.conn, false) }

// connStats reads an SRT connection's statistics: packets lost and retransmitted, as its
// sender or its receiver saw them, and the smoothed round-trip time.
func connStats(c gosrt.Conn, sender bool) sfu.ProtocolStats {
	var st gosrt.Statistics
	c.Stats(&st)
	lost, resent := int64(st.Accumulated.PktRecvLoss), int64(st.Accumulated.PktRecvRetrans)
	if sender {
		lost, resent = int64(st.Accumulated.PktSendLoss), int64(st.Accumulated.PktRetrans)
	}
	rtt := st.Instantaneous.MsRTT
	bytes := int64(st.Accumulated.ByteRecv) //nolint:gosec // counters stay below 2^63
	return sfu.ProtocolStats{PacketsLost: &lost, RTTMs: &rtt, Retransmits: &resent, Bytes: &bytes}
}

func (pub *publisher) unsupportedCodec(name string) {
	for _, u := range pub.unsupported {
		if u == name {
			return
		}
	}
	pub.unsupported = append(pub.unsupported, name)
	pub.log.Warn("srt publisher sends a codec that cannot be published; it is ignored", "codec", name)
	if ing := pub.pub.Grant.Ingest; ing != nil {
		if s, ok := pub.s.ingests.(interface{ SetUnsupported(string, []string) }); ok {
			s.SetUnsupported(ing.ID, pub.unsupported)
		}
	}
}

// summary returns log attributes of the session's media.
func (pub *publisher) summary() []any {
	attrs := []any{"video_frames", pub.frames}
	if pub.dropped > 0 {
		attrs = append(attrs, "dropped", pub.dropped)
	}
	if pub.decodeErrs > 0 {
		attrs = append(attrs, "ts_errors", pub.decodeErrs)
	}
	return attrs
}
