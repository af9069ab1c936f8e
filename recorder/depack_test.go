package recorder

import (
	"bytes"
	"testing"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4"

	"github.com/sluice-media/sluice/recorder/rectest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
)

// TestDepacketizeH264 sends real x264 access units (with B-frames) through gortsplib's
// packetizer and checks that the frame reader gives back the same access units with exact times.
func TestDepacketizeH264(t *testing.T) {
	video, _ := rectest.H264Opus(t, 3, 2)
	pz := rectest.NewPacketizer(t, video)
	dep, _ := media.NewReader(video.Codec)
	sps := video.Init.Codec.(*mp4.CodecH264)
	var got []media.Frame
	var datas [][]byte
	emit := func(f *media.Frame) {
		got = append(got, *f)
		datas = append(datas, append([]byte(nil), f.Data...))
	}
	var ts media.Unwrapper
	for _, s := range video.Samples {
		pkts, err := pz.Packets(s, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, pk := range pkts {
			ext := ts.Unwrap(pk.Timestamp)
			if !dep.Push(&sfu.Packet{Header: pk.Header, Payload: pk.Payload}, ext, false, emit) {
				t.Fatalf("packet of sample pts %d refused", s.PTS)
			}
		}
	}
	dep.Flush(emit)
	if len(got) != len(video.Samples) {
		t.Fatalf("got %d access units, want %d", len(got), len(video.Samples))
	}
	for i, s := range video.Samples {
		want := s.Data
		if s.Key {
			var au h264.AVCC
			_ = au.Unmarshal(s.Data)
			b, _ := h264.AVCC(append([][]byte{sps.SPS, sps.PPS}, au...)).Marshal()
			want = b
		}
		if !bytes.Equal(datas[i], want) {
			t.Fatalf("access unit %d differs", i)
		}
		if got[i].PTS-got[0].PTS != s.PTS-video.Samples[0].PTS || got[i].Key != s.Key {
			t.Fatalf("access unit %d: pts %d key %v, want %d %v", i, got[i].PTS-got[0].PTS, got[i].Key, s.PTS-video.Samples[0].PTS, s.Key)
		}
		// Decode times are exact: the encoder's composition offsets (up to the constant delay
		// each muxer picks), a constant frame step.
		s0 := video.Samples[0]
		if off, want := got[i].PTS-got[i].DTS-(got[0].PTS-got[0].DTS), s.PTS-s.DTS-(s0.PTS-s0.DTS); off != want {
			t.Fatalf("access unit %d: composition offset %d, want %d", i, off, want)
		}
		if i > 0 && got[i].DTS-got[i-1].DTS != s.DTS-video.Samples[i-1].DTS {
			t.Fatalf("access unit %d: decode step %d, want %d", i, got[i].DTS-got[i-1].DTS, s.DTS-video.Samples[i-1].DTS)
		}
	}
}
