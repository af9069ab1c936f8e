// Package clip is the synthetic stream `sluice loadtest` publishes: 4 s of 1280x720 30 fps
// H.264 Constrained Baseline at about 2.6 Mbit/s (a keyframe every 2 s) and Opus, built in and
// packetized once, then looped with continuous timestamps.
//
// Made with:
//
//	ffmpeg -f lavfi -i testsrc2=size=1280x720:rate=30 -t 4 -c:v libx264 -profile:v baseline \
//	  -preset veryfast -tune zerolatency -b:v 2500k -maxrate 2600k -bufsize 1300k -g 60 \
//	  -keyint_min 60 -sc_threshold 0 -x264-params aud=1:nal-hrd=cbr -f h264 clip.h264
//	ffmpeg -f lavfi -i sine=frequency=440:sample_rate=48000 -t 4 -c:a libopus -b:a 64k \
//	  -frame_duration 20 -page_duration 20000 -f ogg clip.ogg
package clip

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4/pkg/media/oggreader"
)

//go:embed clip.h264
var h264Data []byte

//go:embed clip.ogg
var oggData []byte

// Duration of one loop of the clip, in the clocks of its tracks.
const (
	VideoLoopTicks = 4 * 90000
	AudioLoopTicks = 4 * 48000
	FrameTicks     = 3000 // 30 fps at 90 kHz
	GOPFrames      = 60   // a keyframe every 2 s
	OpusTicks      = 960  // 20 ms at 48 kHz
)

// Frame is one video access unit as RTP packets (timestamps relative to the loop start).
type Frame struct {
	PTS     uint32
	Packets []*rtp.Packet
}

// Clip is the packetized stream.
type Clip struct {
	Video []Frame
	Audio [][]byte // Opus packets, 20 ms each
	// Bytes of RTP payload per loop, to compute the nominal bitrate.
	VideoBytes, AudioBytes int
}

// Load packetizes the built-in clip (payloads up to maxPayload bytes).
func Load(maxPayload int) (*Clip, error) {
	enc := &rtph264.Encoder{PayloadType: 96, PayloadMaxSize: maxPayload, PacketizationMode: 1}
	if err := enc.Init(); err != nil {
		return nil, err
	}
	c := &Clip{}
	for i, au := range accessUnits(h264Data) {
		pkts, err := enc.Encode(au)
		if err != nil {
			return nil, fmt.Errorf("clip: %w", err)
		}
		for _, p := range pkts {
			c.VideoBytes += len(p.Payload)
		}
		c.Video = append(c.Video, Frame{PTS: uint32(i * FrameTicks), Packets: pkts})
	}
	r, _, err := oggreader.NewWith(bytes.NewReader(oggData))
	if err != nil {
		return nil, fmt.Errorf("clip: %w", err)
	}
	for {
		payload, _, err := r.ParseNextPage()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("clip: %w", err)
		}
		if bytes.HasPrefix(payload, []byte("OpusTags")) {
			continue
		}
		c.Audio = append(c.Audio, payload)
		c.AudioBytes += len(payload)
	}
	if len(c.Video) != 120 || len(c.Audio) < 190 {
		return nil, fmt.Errorf("clip: %d frames and %d audio packets, want 120 and 200", len(c.Video), len(c.Audio))
	}
	return c, nil
}

// accessUnits splits an Annex-B stream into access units at its delimiters (NAL type 9).
func accessUnits(b []byte) [][][]byte {
	var aus [][][]byte
	var cur [][]byte
	for _, n := range nalus(b) {
		if n[0]&0x1f == 9 {
			if len(cur) > 0 {
				aus = append(aus, cur)
			}
			cur = nil
			continue
		}
		cur = append(cur, n)
	}
	if len(cur) > 0 {
		aus = append(aus, cur)
	}
	return aus
}

// nalus splits Annex-B bytes at 00 00 01 / 00 00 00 01 start codes.
func nalus(b []byte) [][]byte {
	var out [][]byte
	start := -1
	for i := 0; i+2 < len(b); i++ {
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 {
			if start >= 0 {
				end := i
				if end > start && b[end-1] == 0 {
					end--
				}
				if end > start {
					out = append(out, b[start:end])
				}
			}
			start = i + 3
			i += 2
		}
	}
	if start >= 0 && start < len(b) {
		out = append(out, b[start:])
	}
	return out
}
