package srt

import (
	"bytes"
	"testing"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"

	"github.com/sluice-media/sluice/sfu"
)

// The muxer's output, read back by mediacommon's demuxer, gives the same access units and
// times for every codec pair, with frames of every size (a TS packet's worth, one byte short
// of it, empty stuffing, many packets), and its packets are 188 bytes with continuous counters.
func TestTSMuxRoundTrip(t *testing.T) {
	asc := &mpeg4audio.AudioSpecificConfig{Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 48000, ChannelCount: 2}
	for _, c := range []struct{ video, audio string }{
		{sfu.CodecH264, sfu.CodecAAC},
		{sfu.CodecH265, sfu.CodecOpus},
		{"", sfu.CodecAAC},
		{sfu.CodecH264, ""},
	} {
		t.Run(c.video+"+"+c.audio, func(t *testing.T) {
			var m tsMuxer
			m.setProgram(c.video, c.audio, 2)
			type au struct {
				pts, dts int64
				data     []byte
			}
			var videoIn, audioIn []au
			for i := range 40 {
				pts := int64(90000 + i*3000)
				if c.video != "" {
					size := []int{10, 168, 169, 170, 171, 175, 176, 177, 178, 183, 184, 185, 5000, 40000}[i%14]
					typ := byte(1) // H.264 non-IDR slice
					if c.video == sfu.CodecH265 {
						typ = 1 << 1
					}
					key := i%10 == 0
					if key {
						typ = 5
						if c.video == sfu.CodecH265 {
							typ = 19 << 1
						}
					}
					nalu := append([]byte{typ, 1}, bytes.Repeat([]byte{byte(i + 1)}, size)...)
					dts := pts - 3000
					if err := m.writeVideo(pts+3000, dts, key, [][]byte{nalu}); err != nil {
						t.Fatal(err)
					}
					videoIn = append(videoIn, au{pts + 3000, dts, nalu})
				}
				if c.audio != "" {
					frame := bytes.Repeat([]byte{byte(i + 7)}, []int{1, 100, 254, 255, 256, 600}[i%6])
					if err := m.writeAudio(pts, frame, asc); err != nil {
						t.Fatal(err)
					}
					audioIn = append(audioIn, au{pts, pts, frame})
				}
			}
			out := m.Out
			if len(out)%tsPacketSize != 0 {
				t.Fatalf("%d bytes: not whole TS packets", len(out))
			}
			cc := map[uint16]int{}
			for off := 0; off < len(out); off += tsPacketSize {
				p := out[off : off+tsPacketSize]
				pid := uint16(p[1]&0x1f)<<8 | uint16(p[2])
				if p[0] != 0x47 {
					t.Fatalf("packet at %d: no sync byte", off)
				}
				if last, ok := cc[pid]; ok && int(p[3]&0x0f) != (last+1)&0x0f {
					t.Fatalf("PID %d: continuity counter %d after %d", pid, p[3]&0x0f, last)
				}
				cc[pid] = int(p[3] & 0x0f)
			}

			r := &mpegts.Reader{R: bytes.NewReader(out)}
			if err := r.Initialize(); err != nil {
				t.Fatal(err)
			}
			var videoOut, audioOut []au
			for _, tr := range r.Tracks() {
				switch tr.Codec.(type) {
				case *mpegts.CodecH264:
					r.OnDataH264(tr, func(pts, dts int64, nalus [][]byte) error {
						videoOut = append(videoOut, au{pts, dts, bytes.Clone(nalus[len(nalus)-1])})
						return nil
					})
				case *mpegts.CodecH265:
					r.OnDataH265(tr, func(pts, dts int64, nalus [][]byte) error {
						videoOut = append(videoOut, au{pts, dts, bytes.Clone(nalus[len(nalus)-1])})
						return nil
					})
				case *mpegts.CodecMPEG4Audio:
					r.OnDataMPEG4Audio(tr, func(pts int64, aus [][]byte) error {
						for _, a := range aus {
							audioOut = append(audioOut, au{pts, pts, bytes.Clone(a)})
						}
						return nil
					})
				case *mpegts.CodecOpus:
					r.OnDataOpus(tr, func(pts int64, pkts [][]byte) error {
						for _, a := range pkts {
							audioOut = append(audioOut, au{pts, pts, bytes.Clone(a)})
						}
						return nil
					})
				default:
					t.Fatalf("track %T", tr.Codec)
				}
			}
			for r.Read() == nil {
			}
			t.Logf("%d/%d video, %d/%d audio access units back", len(videoOut), len(videoIn), len(audioOut), len(audioIn))
			// The demuxer hands out a PES when the next one starts: the last of each stream stays.
			for _, x := range []struct {
				name    string
				in, out []au
			}{{"video", videoIn, videoOut}, {"audio", audioIn, audioOut}} {
				if len(x.in) == 0 {
					continue
				}
				if len(x.out) < len(x.in)-1 {
					t.Fatalf("%s: %d access units back of %d", x.name, len(x.out), len(x.in))
				}
				for i, o := range x.out {
					in := x.in[i]
					if o.pts != in.pts || o.dts != in.dts || !bytes.Equal(o.data, in.data) {
						t.Fatalf("%s %d: got pts %d dts %d %d bytes, want pts %d dts %d %d bytes", x.name, i, o.pts, o.dts, len(o.data), in.pts, in.dts, len(in.data))
					}
				}
			}
		})
	}
}
