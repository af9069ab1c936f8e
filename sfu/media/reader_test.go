package media

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph265"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpsimpleaudio"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpvp8"
	"github.com/pion/rtp"

	"github.com/sluice-media/sluice/sfu"
)

var (
	h264SPS = []byte{0x67, 0x42, 0xc0, 0x1f, 0xd9, 0x00, 0x50, 0x05, 0xbb, 0x01, 0x10} // Baseline 1280x720
	h264PPS = []byte{0x68, 0xce, 0x3c, 0x80}
	h265VPS = []byte{0x40, 0x01, 0x0c, 0x01, 0xff, 0xff}
	h265SPS = []byte{0x42, 0x01, 0x01, 0x01}
	h265PPS = []byte{0x44, 0x01, 0xc1}
)

// TestReaders encodes frames with gortsplib's packetizers (the ones Writer uses) and reads
// them back: the same frames, times, keyframe flags and parameters.
func TestReaders(t *testing.T) {
	aacCodec := AACCodec([]byte{0x11, 0x90}, 48000, 2, 97)
	big := append([]byte{0x65}, bytes.Repeat([]byte{7}, 5000)...)
	vp8Key := append([]byte{0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01}, bytes.Repeat([]byte{3}, 3000)...)
	for _, tc := range []struct {
		name   string
		codec  sfu.Codec
		encode func(frame [][]byte) ([]*rtp.Packet, error)
		frames [][][]byte // input frames, one per timestamp
		want   [][]byte   // expected Data of each frame
		key    []bool
		step   int64 // expected PTS step between frames
	}{
		{
			name:   "h264",
			codec:  H264Codec(h264SPS, h264PPS, 96),
			encode: initEnc(&rtph264.Encoder{PayloadType: 96, PayloadMaxSize: 1150, PacketizationMode: 1}),
			frames: [][][]byte{{{0x09, 0xf0}, h264SPS, h264PPS, big}, {{0x41, 1, 2, 3}}},
			want:   [][]byte{avcc(h264SPS, h264PPS, big), avcc([]byte{0x41, 1, 2, 3})},
			key:    []bool{true, false},
			step:   3000,
		},
		{
			name:   "h265",
			codec:  sfu.Codec{Name: sfu.CodecH265, ClockRate: 90000},
			encode: initEnc(&rtph265.Encoder{PayloadType: 96, PayloadMaxSize: 1150}),
			frames: [][][]byte{{h265VPS, h265SPS, h265PPS, {0x26, 0x01, 0xaf, 1, 2}}, {{0x02, 0x01, 0xd0, 3}}},
			want:   [][]byte{avcc(h265VPS, h265SPS, h265PPS, []byte{0x26, 0x01, 0xaf, 1, 2}), avcc([]byte{0x02, 0x01, 0xd0, 3})},
			key:    []bool{true, false},
			step:   3000,
		},
		{
			name:   "aac several and fragmented",
			codec:  aacCodec,
			encode: initEnc(&rtpmpeg4audio.Encoder{PayloadType: 97, PayloadMaxSize: 1150, SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3}),
			frames: [][][]byte{{{1, 1, 1}, {2, 2}, {3}}, {bytes.Repeat([]byte{4}, 3000)}},
			want:   [][]byte{{1, 1, 1}, {2, 2}, {3}, bytes.Repeat([]byte{4}, 3000)},
			key:    []bool{true, true, true, true},
			step:   1024,
		},
		{
			name:   "vp8",
			codec:  sfu.Codec{Name: sfu.CodecVP8, ClockRate: 90000},
			encode: single(initVP8()),
			frames: [][][]byte{{vp8Key}, {{0x31, 0x02, 0x00, 5, 6}}},
			want:   [][]byte{vp8Key, {0x31, 0x02, 0x00, 5, 6}},
			key:    []bool{true, false},
			step:   3000,
		},
		{
			name:   "opus",
			codec:  sfu.Codec{Name: sfu.CodecOpus, ClockRate: 48000, Channels: 2},
			encode: simple(),
			frames: [][][]byte{{{0xfc, 1, 2}}, {{0xfc, 3}}},
			want:   [][]byte{{0xfc, 1, 2}, {0xfc, 3}},
			key:    []bool{true, true},
			step:   960,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewReader(tc.codec)
			if err != nil {
				t.Fatal(err)
			}
			var got []Frame
			var datas [][]byte
			emit := func(f *Frame) {
				got = append(got, *f)
				datas = append(datas, bytes.Clone(f.Data))
			}
			var ts uint32
			for _, fr := range tc.frames {
				pkts, err := tc.encode(fr)
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range pkts {
					p.Timestamp = ts
					if !r.Push(&sfu.Packet{Header: p.Header, Payload: p.Payload}, int64(ts), false, emit) {
						t.Fatalf("packet refused")
					}
				}
				n := uint32(1) // AAC: access units per packet
				if tc.codec.Name == sfu.CodecAAC {
					n = uint32(len(fr))
				}
				ts += uint32(tc.step) * n
			}
			r.Flush(emit)
			if len(got) != len(tc.want) {
				t.Fatalf("%d frames, want %d", len(got), len(tc.want))
			}
			for i := range tc.want {
				if !bytes.Equal(datas[i], tc.want[i]) || got[i].Key != tc.key[i] || got[i].PTS != int64(i)*tc.step || got[i].DTS > got[i].PTS {
					t.Errorf("frame %d: %d bytes key %v pts %d dts %d", i, len(datas[i]), got[i].Key, got[i].PTS, got[i].DTS)
				}
			}
			if p, _ := r.Params(); !p.Ready(tc.codec.Name) {
				t.Errorf("params not ready: %+v", p)
			}
		})
	}
}

// TestReaderLoss: after a loss a video reader drops frames until the next keyframe.
func TestReaderLoss(t *testing.T) {
	r, _ := NewReader(H264Codec(h264SPS, h264PPS, 96))
	var keys []bool
	emit := func(f *Frame) { keys = append(keys, f.Key) }
	push := func(ts uint32, lost bool, nalu []byte) {
		r.Push(&sfu.Packet{Header: rtp.Header{Timestamp: ts, Marker: true}, Payload: nalu}, int64(ts), lost, emit)
	}
	push(0, false, []byte{0x41, 1}) // no keyframe yet
	push(3000, false, []byte{0x65, 1})
	push(6000, false, []byte{0x41, 2})
	push(9000, true, []byte{0x41, 3}) // after a loss
	push(12000, false, []byte{0x65, 2})
	r.Flush(emit)
	if want := []bool{true, false, true}; len(keys) != len(want) || keys[0] != want[0] || keys[1] != want[1] || keys[2] != want[2] {
		t.Fatalf("frames %v, want %v", keys, want)
	}
}

func TestParseAAC(t *testing.T) {
	for _, tc := range []struct {
		fmtp string
		ok   bool
	}{
		{"mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=1190", true},
		{"config=1190", true},
		{"mode=AAC-lbr;sizelength=6;indexlength=2;indexdeltalength=2;config=1190", true},
		{"mode=CELP-cbr;config=1190", false},
		{"sizelength=40;config=1190", false},
		{"sizelength=0;config=1190", false},
		{"indexlength=x;config=1190", false},
		{"sizelength=13", false},
		{"config=zz", false},
	} {
		_, err := ParseAAC(sfu.Codec{Name: sfu.CodecAAC, Fmtp: tc.fmtp})
		if (err == nil) != tc.ok {
			t.Errorf("%q: err %v", tc.fmtp, err)
		}
	}
}

func TestSprop(t *testing.T) {
	sps, pps := H264Sprop(H264Codec(h264SPS, h264PPS, 96).Fmtp)
	if !bytes.Equal(sps, h264SPS) || !bytes.Equal(pps, h264PPS) {
		t.Fatalf("sps %x pps %x", sps, pps)
	}
	vps, s, p := H265Sprop(" sprop-vps=QAEMAf//; sprop-sps=QgEBAQ==;sprop-pps=RAHB ;x=1")
	if !bytes.Equal(vps, h265VPS) || !bytes.Equal(s, h265SPS) || !bytes.Equal(p, h265PPS) {
		t.Fatalf("vps %x sps %x pps %x", vps, s, p)
	}
	if got := FmtpValue("a=1; Packetization-Mode = 1 ", "packetization-mode"); got != "1" {
		t.Fatalf("FmtpValue %q", got)
	}
}

func avcc(nalus ...[]byte) []byte {
	var b []byte
	for _, n := range nalus {
		b = binary.BigEndian.AppendUint32(b, uint32(len(n)))
		b = append(b, n...)
	}
	return b
}

type encoder interface {
	Init() error
	Encode([][]byte) ([]*rtp.Packet, error)
}

func initEnc(e encoder) func([][]byte) ([]*rtp.Packet, error) {
	if err := e.Init(); err != nil {
		panic(err)
	}
	return e.Encode
}

func initVP8() func([]byte) ([]*rtp.Packet, error) {
	e := &rtpvp8.Encoder{PayloadType: 96, PayloadMaxSize: 1150}
	if err := e.Init(); err != nil {
		panic(err)
	}
	return e.Encode
}

func simple() func([][]byte) ([]*rtp.Packet, error) {
	e := &rtpsimpleaudio.Encoder{PayloadType: 111}
	if err := e.Init(); err != nil {
		panic(err)
	}
	return func(f [][]byte) ([]*rtp.Packet, error) {
		p, err := e.Encode(f[0])
		return []*rtp.Packet{p}, err
	}
}

// TestReaderCarriedDTS: packets that carry their decode time (Writer.WriteDTS, an RTMP
// ingest) give frames with exactly that time, at once: nothing is held for a reorder window.
func TestReaderCarriedDTS(t *testing.T) {
	r, _ := NewReader(H264Codec(h264SPS, h264PPS, 96))
	var got []Frame
	emit := func(f *Frame) { got = append(got, *f) }
	// Decode order I P B B with composition offsets of a two-B-frame GOP (ticks of 90 kHz).
	type au struct {
		pts  uint32
		cts  int32
		nalu []byte
	}
	aus := []au{{6000, 6000, []byte{0x65, 1}}, {15000, 12000, []byte{0x41, 2}}, {9000, 3000, []byte{0x01, 3}}, {12000, 3000, []byte{0x01, 4}}}
	for i, a := range aus {
		p := &sfu.Packet{Header: rtp.Header{Timestamp: a.pts, Marker: true}, Payload: a.nalu, HasDTS: true, DTSOffset: a.cts}
		r.Push(p, int64(a.pts), false, emit)
		if len(got) != i+1 {
			t.Fatalf("access unit %d held", i)
		}
		if f := got[i]; f.PTS != int64(a.pts) || f.DTS != int64(a.pts)-int64(a.cts) {
			t.Fatalf("access unit %d: pts %d dts %d, want %d %d", i, f.PTS, f.DTS, a.pts, int64(a.pts)-int64(a.cts))
		}
	}
}
