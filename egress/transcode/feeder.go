package transcode

import (
	"bufio"
	"fmt"
	"io"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
)

// input is the stdin of one ffmpeg process in the plan's container. It is written by the feeder
// only; the process's runner closes the pipe under it when ffmpeg ends, which makes the next
// write fail.
type input struct {
	bw      *bufio.Writer
	ts      *mpegts.Writer
	track   *mpegts.Track
	ivf     *ivfWriter
	codec   string
	one     [1][]byte // scratch: the one frame of an Opus write
	needKey bool      // video: nothing before the first keyframe (a decoder cannot start elsewhere)
	failed  bool      // a write failed: the process is ending
}

func newInput(w io.Writer, p plan) (*input, error) {
	in := &input{bw: bufio.NewWriterSize(w, 64<<10), codec: p.from, needKey: p.src.Kind() == sfu.KindVideo}
	switch p.from {
	case sfu.CodecVP8:
		in.ivf = newIVFWriter(in.bw, "VP80")
		return in, nil
	case sfu.CodecVP9:
		in.ivf = newIVFWriter(in.bw, "VP90")
		return in, nil
	case sfu.CodecAAC:
		in.track = &mpegts.Track{Codec: &mpegts.CodecMPEG4Audio{Config: p.aac.Config}}
	case sfu.CodecOpus:
		ch := int(p.src.Channels)
		if ch == 0 {
			ch = 2
		}
		in.track = &mpegts.Track{Codec: &mpegts.CodecOpus{ChannelCount: ch}}
	case sfu.CodecH265:
		in.track = &mpegts.Track{Codec: &mpegts.CodecH265{}}
	case sfu.CodecH264:
		in.track = &mpegts.Track{Codec: &mpegts.CodecH264{}}
	default:
		return nil, ErrUnsupported
	}
	in.ts = &mpegts.Writer{W: in.bw, Tracks: []*mpegts.Track{in.track}}
	return in, in.ts.Initialize()
}

// write sends one frame with its 90 kHz presentation and decode times and flushes it to ffmpeg.
func (in *input) write(pts, dts int64, f *media.Frame) error {
	var err error
	switch in.codec {
	case sfu.CodecVP8, sfu.CodecVP9:
		err = in.ivf.writeFrame(pts, f.Data)
	case sfu.CodecAAC:
		in.one[0] = f.Data
		err = in.ts.WriteMPEG4Audio(in.track, pts&ptsMask, in.one[:])
	case sfu.CodecOpus:
		in.one[0] = f.Data
		err = in.ts.WriteOpus(in.track, pts&ptsMask, in.one[:])
	case sfu.CodecH265:
		err = in.ts.WriteH265(in.track, pts&ptsMask, dts&ptsMask, f.NALUs)
	case sfu.CodecH264:
		if len(f.NALUs) == 0 {
			return nil
		}
		err = in.ts.WriteH264(in.track, pts&ptsMask, dts&ptsMask, f.NALUs)
	}
	if err != nil {
		return err
	}
	return in.bw.Flush()
}

// Feeder writes the frames of one track into the stdin of an ffmpeg of the caller's: MPEG-TS
// for H.264, H.265, AAC and Opus, IVF for VP8 and VP9 (Format names ffmpeg's -f). Video starts
// at the first keyframe. It is owned by one goroutine.
type Feeder struct{ in *input }

// NewFeeder returns a feeder of src's frames to w; aac are the parameters of an AAC source.
func NewFeeder(w io.Writer, src sfu.Codec, aac *media.AACParams) (*Feeder, error) {
	if src.Name == sfu.CodecAAC && aac == nil {
		return nil, fmt.Errorf("%w: AAC without its config", ErrUnsupported)
	}
	in, err := newInput(w, plan{from: src.Name, src: src, aac: aac})
	if err != nil {
		return nil, err
	}
	return &Feeder{in: in}, nil
}

// Format is the container, as ffmpeg's -f names it.
func (f *Feeder) Format() string {
	if f.in.ivf != nil {
		return "ivf"
	}
	return "mpegts"
}

// NeedsKeyframe reports whether the feeder waits for a keyframe (the caller asks the source).
func (f *Feeder) NeedsKeyframe() bool { return f.in.needKey }

// Write writes one frame with its 90 kHz presentation and decode times; frames before the first
// keyframe are dropped. An error means the process's stdin is gone.
func (f *Feeder) Write(pts, dts int64, fr *media.Frame) error {
	if f.in.needKey {
		if !fr.Key {
			return nil
		}
		f.in.needKey = false
	}
	return f.in.write(pts, dts, fr)
}
