package transcode

import (
	"errors"
	"fmt"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
)

// ErrUnsupported is returned for a conversion the transcoder does not do.
var ErrUnsupported = errors.New("conversion not supported")

// Output codecs of the derived tracks: what WebRTC viewers (Opus, H.264 Constrained Baseline
// packetization mode 1) and RTMP platforms (AAC-LC, H.264) take.
var (
	opusOut = sfu.Codec{Name: sfu.CodecOpus, ClockRate: 48000, Channels: 2, Fmtp: "minptime=10;useinbandfec=1", PayloadType: 111}
	h264Out = sfu.Codec{Name: sfu.CodecH264, ClockRate: 90000,
		Fmtp: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f", PayloadType: 106}
)

// aacOut is AAC-LC, 48 kHz stereo, as ffmpeg is told to make it.
func aacOut() sfu.Codec {
	asc := mpeg4audio.AudioSpecificConfig{Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 48000, ChannelCount: 2}
	b, _ := asc.Marshal() // a valid config always marshals
	return media.AACCodec(b, 48000, 2, 97)
}

// container is how the source's frames go into ffmpeg.
type container int

const (
	containerTS  container = iota // MPEG-TS: AAC (ADTS), Opus, H.265
	containerIVF                  // IVF: VP8, VP9
)

// plan is one kind of conversion: what goes into ffmpeg and how, the arguments, what comes out.
type plan struct {
	from, to string
	src      sfu.Codec
	out      sfu.Codec
	in       container
	// aac are the parameters of an AAC source.
	aac *media.AACParams
}

// planFor returns how src becomes the codec to, or ErrUnsupported.
func planFor(src sfu.Codec, to string) (plan, error) {
	p := plan{from: src.Name, to: to, src: src, in: containerTS}
	unsupported := fmt.Errorf("%w: %s to %s", ErrUnsupported, src.Name, to)
	switch to {
	case sfu.CodecOpus:
		if src.Name != sfu.CodecAAC {
			return plan{}, unsupported
		}
		p.out = opusOut
	case sfu.CodecAAC:
		if src.Name != sfu.CodecOpus {
			return plan{}, unsupported
		}
		p.out = aacOut()
	case sfu.CodecH264:
		switch src.Name {
		case sfu.CodecVP8, sfu.CodecVP9:
			p.in = containerIVF
		case sfu.CodecH265:
		default:
			return plan{}, unsupported
		}
		p.out = h264Out
	default:
		return plan{}, unsupported
	}
	if src.Name == sfu.CodecAAC {
		a, err := media.ParseAAC(src)
		if err != nil {
			return plan{}, fmt.Errorf("%w: %w", unsupported, err)
		}
		if a.Config.Type < 1 || a.Config.Type > 4 {
			// ADTS, the framing of AAC in MPEG-TS, carries object types 1 to 4 only.
			return plan{}, fmt.Errorf("%w: AAC object type %d", unsupported, a.Config.Type)
		}
		p.aac = a
	}
	return p, nil
}

// video reports whether the conversion is of video.
func (p plan) video() bool { return p.out.Kind() == sfu.KindVideo }

// String names the conversion for logs and status ("aac->opus").
func (p plan) String() string { return p.from + "->" + p.to }

// args is ffmpeg's command line: input from stdin, output to stdout, MPEG-TS out with the
// input's timestamps (-copyts, -mpegts_copyts), each packet written and flushed at once
// (-pes_payload_size 0, -flush_packets 1) and the smallest probe that finds the stream.
//
// -fflags nobuffer is left out on purpose: with a tiny probe it makes ffmpeg 5.1 lose the
// input's start time and restart the output at 0, which breaks the timestamp mapping.
func (p plan) args() []string {
	a := []string{"-hide_banner", "-nostdin", "-nostats", "-loglevel", "warning",
		"-probesize", "32", "-analyzeduration", "0"}
	if p.in == containerIVF {
		a = append(a, "-f", "ivf")
	} else {
		a = append(a, "-f", "mpegts")
	}
	a = append(a, "-i", "pipe:0", "-map", "0:0")
	switch p.to {
	case sfu.CodecOpus:
		a = append(a, "-c:a", "libopus", "-ar", "48000", "-ac", "2", "-b:a", "96k", "-frame_duration", "20")
	case sfu.CodecAAC:
		a = append(a, "-c:a", "aac", "-profile:a", "aac_low", "-ar", "48000", "-ac", "2", "-b:a", "128k")
	case sfu.CodecH264:
		a = append(a, "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
			"-profile:v", "baseline", "-pix_fmt", "yuv420p", "-bf", "0",
			// Even dimensions (4:2:0), otherwise the source's size.
			"-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2",
			// A keyframe every 2 s of source time, whatever the frame rate (browsers vary it).
			"-force_key_frames", "expr:if(isnan(prev_forced_t),1,gte(t-prev_forced_t,2))",
			"-sc_threshold", "0", "-fps_mode", "passthrough",
			"-crf", "23", "-maxrate", "4M", "-bufsize", "4M")
	}
	return append(a, "-copyts", "-mpegts_copyts", "1", "-muxdelay", "0", "-muxpreload", "0",
		"-pes_payload_size", "0", "-flush_packets", "1", "-f", "mpegts", "pipe:1")
}
