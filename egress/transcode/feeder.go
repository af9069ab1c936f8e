package transcode

import (
	"bufio"
	"errors"
	"io"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph265"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpvp8"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpvp9"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	"github.com/pion/rtp"

	"github.com/sluice-media/sluice/sfu"
)

// frame is one unit of the source for ffmpeg: AAC access units, one Opus packet, an H.265
// access unit (NAL units) or one VP8/VP9 frame.
type frame struct {
	ts  uint32 // RTP timestamp of the source
	au  [][]byte
	key bool // a video keyframe
}

// input is the stdin of one ffmpeg process in the plan's container. It is written by the feeder
// only; the process's runner closes the pipe under it when ffmpeg ends, which makes the next
// write fail.
type input struct {
	bw      *bufio.Writer
	ts      *mpegts.Writer
	track   *mpegts.Track
	ivf     *ivfWriter
	codec   string
	needKey bool // video: nothing before the first keyframe (a decoder cannot start elsewhere)
	failed  bool // a write failed: the process is ending
}

func newInput(w io.Writer, p plan) (*input, error) {
	in := &input{bw: bufio.NewWriterSize(w, 64<<10), codec: p.from, needKey: p.video()}
	switch p.from {
	case sfu.CodecVP8:
		in.ivf = newIVFWriter(in.bw, "VP80")
		return in, nil
	case sfu.CodecVP9:
		in.ivf = newIVFWriter(in.bw, "VP90")
		return in, nil
	case sfu.CodecAAC:
		in.track = &mpegts.Track{Codec: &mpegts.CodecMPEG4Audio{Config: *p.aacConfig}}
	case sfu.CodecOpus:
		ch := int(p.src.Channels)
		if ch == 0 {
			ch = 2
		}
		in.track = &mpegts.Track{Codec: &mpegts.CodecOpus{ChannelCount: ch}}
	case sfu.CodecH265:
		in.track = &mpegts.Track{Codec: &mpegts.CodecH265{}}
	default:
		return nil, ErrUnsupported
	}
	in.ts = &mpegts.Writer{W: in.bw, Tracks: []*mpegts.Track{in.track}}
	return in, in.ts.Initialize()
}

// write sends one frame with its 90 kHz presentation time and flushes it to ffmpeg.
func (in *input) write(pts int64, f *frame) error {
	var err error
	switch in.codec {
	case sfu.CodecVP8, sfu.CodecVP9:
		err = in.ivf.writeFrame(pts, f.au[0])
	case sfu.CodecAAC:
		err = in.ts.WriteMPEG4Audio(in.track, pts&ptsMask, f.au)
	case sfu.CodecOpus:
		err = in.ts.WriteOpus(in.track, pts&ptsMask, f.au)
	case sfu.CodecH265:
		// RTP carries presentation times only; decoding times equal them for streams without
		// B-frames, and ffmpeg reorders by itself otherwise.
		err = in.ts.WriteH265(in.track, pts&ptsMask, pts&ptsMask, f.au)
	}
	if err != nil {
		return err
	}
	return in.bw.Flush()
}

// depacketizer turns the source's RTP packets into frames (RFC 3640 AAC, RFC 7587 Opus,
// RFC 7798 H.265, RFC 7741 VP8, RFC 9628 VP9 through gortsplib's decoders). It is owned by the
// feeder's goroutine.
type depacketizer struct {
	codec string
	pkt   rtp.Packet // scratch: the decoders take a pointer and keep nothing of it
	aac   *rtpmpeg4audio.Decoder
	h265  *rtph265.Decoder
	vp8   *rtpvp8.Decoder
	vp9   *rtpvp9.Decoder
	key   bool // a packet of the frame being assembled started a keyframe
}

func newDepacketizer(p plan) (*depacketizer, error) {
	d := &depacketizer{codec: p.from}
	if p.from == sfu.CodecAAC {
		d.aac = &rtpmpeg4audio.Decoder{SizeLength: p.sizeLength, IndexLength: p.indexLength, IndexDeltaLength: p.indexDeltaLength}
	}
	return d, d.reset()
}

// reset drops any partial frame (after packets were skipped).
func (d *depacketizer) reset() error {
	d.key = false
	switch d.codec {
	case sfu.CodecAAC:
		return d.aac.Init()
	case sfu.CodecH265:
		d.h265 = &rtph265.Decoder{}
		return d.h265.Init()
	case sfu.CodecVP8:
		d.vp8 = &rtpvp8.Decoder{}
		return d.vp8.Init()
	case sfu.CodecVP9:
		d.vp9 = &rtpvp9.Decoder{}
		return d.vp9.Init()
	}
	return nil
}

// errIncomplete says a packet did not complete a frame.
var errIncomplete = errors.New("incomplete frame")

// push adds a packet and returns the frame it completes, errIncomplete, or a decoding error
// (the packet is dropped; the stream goes on).
func (d *depacketizer) push(p *sfu.Packet) (frame, error) {
	d.pkt.Header, d.pkt.Payload = p.Header, p.Payload
	d.key = d.key || p.Keyframe
	f := frame{ts: p.Header.Timestamp}
	var err error
	switch d.codec {
	case sfu.CodecOpus:
		if len(p.Payload) == 0 {
			return frame{}, errIncomplete
		}
		f.au = [][]byte{p.Payload}
	case sfu.CodecAAC:
		f.au, err = d.aac.Decode(&d.pkt)
	case sfu.CodecH265:
		f.au, err = d.h265.Decode(&d.pkt)
	case sfu.CodecVP8:
		var b []byte
		b, err = d.vp8.Decode(&d.pkt)
		f.au = [][]byte{b}
	case sfu.CodecVP9:
		var b []byte
		b, err = d.vp9.Decode(&d.pkt)
		f.au = [][]byte{b}
	}
	switch {
	case errors.Is(err, rtpmpeg4audio.ErrMorePacketsNeeded), errors.Is(err, rtph265.ErrMorePacketsNeeded),
		errors.Is(err, rtpvp8.ErrMorePacketsNeeded), errors.Is(err, rtpvp9.ErrMorePacketsNeeded):
		return frame{}, errIncomplete
	case err != nil:
		d.key = false
		return frame{}, err
	}
	f.key, d.key = d.key, false
	return f, nil
}
