package rtmpproto_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/rtmpproto"
	"github.com/sluice-media/sluice/sfu/rtmpproto/rtmptest"
)

func TestParseVideoTag(t *testing.T) {
	cases := []struct {
		name  string
		in    []byte
		codec string
		kind  rtmpproto.PacketKind
		key   bool
		cts   int32
		data  []byte
		err   bool
	}{
		{"avc sequence header", rtmptest.AVCTag(true, 0, 0, []byte{1, 2}), sfu.CodecH264, rtmpproto.PacketSequenceStart, true, 0, []byte{1, 2}, false},
		{"avc keyframe", rtmptest.AVCTag(true, 1, 67, []byte{9}), sfu.CodecH264, rtmpproto.PacketFrame, true, 67, []byte{9}, false},
		{"avc negative cts", rtmptest.AVCTag(false, 1, -33, []byte{9}), sfu.CodecH264, rtmpproto.PacketFrame, false, -33, []byte{9}, false},
		{"avc end of sequence", rtmptest.AVCTag(false, 2, 0, nil), sfu.CodecH264, rtmpproto.PacketSequenceEnd, false, 0, []byte{}, false},
		{"avc bad packet type", rtmptest.AVCTag(false, 7, 0, nil), sfu.CodecH264, 0, false, 0, nil, true},
		{"avc truncated", []byte{0x17, 1, 0}, "", 0, false, 0, nil, true},
		{"legacy vp6 unsupported", []byte{0x24, 1, 2}, "", rtmpproto.PacketFrame, false, 0, []byte{1, 2}, false},
		{"hvc1 sequence start", rtmptest.ExVideoTag("hvc1", rtmpproto.ExSequenceStart, true, 0, []byte{5}), sfu.CodecH265, rtmpproto.PacketSequenceStart, true, 0, []byte{5}, false},
		{"hvc1 coded frames with cts", rtmptest.ExVideoTag("hvc1", rtmpproto.ExCodedFrames, false, 40, []byte{6}), sfu.CodecH265, rtmpproto.PacketFrame, false, 40, []byte{6}, false},
		{"hvc1 coded frames x", rtmptest.ExVideoTag("hvc1", rtmpproto.ExCodedFramesX, true, 0, []byte{7}), sfu.CodecH265, rtmpproto.PacketFrame, true, 0, []byte{7}, false},
		{"av01 frames carry no cts", rtmptest.ExVideoTag("av01", rtmpproto.ExCodedFrames, true, 0, []byte{8, 9}), sfu.CodecAV1, rtmpproto.PacketFrame, true, 0, []byte{8, 9}, false},
		{"vp09 sequence start", rtmptest.ExVideoTag("vp09", rtmpproto.ExSequenceStart, true, 0, []byte{1}), sfu.CodecVP9, rtmpproto.PacketSequenceStart, true, 0, []byte{1}, false},
		{"unknown fourcc", rtmptest.ExVideoTag("xyz1", rtmpproto.ExCodedFramesX, true, 0, []byte{1}), "", rtmpproto.PacketFrame, true, 0, []byte{1}, false},
		{"ex metadata ignored", rtmptest.ExVideoTag("hvc1", rtmpproto.ExMetadata, false, 0, []byte{2}), sfu.CodecH265, rtmpproto.PacketOther, false, 0, nil, false},
		{"modex then coded frames x", append([]byte{0x80 | 1<<4 | rtmpproto.ExModEx, 0, 0xaa, 0x10 | rtmpproto.ExCodedFramesX}, append([]byte("hvc1"), 3)...),
			sfu.CodecH265, rtmpproto.PacketFrame, true, 0, []byte{3}, false},
		{"truncated fourcc", []byte{0x90, 'h', 'v'}, "", 0, false, 0, nil, true},
		{"command frame", []byte{0x80 | 5<<4 | rtmpproto.ExCodedFrames, 0}, "", rtmpproto.PacketOther, false, 0, nil, false},
		{"empty", nil, "", 0, false, 0, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := rtmpproto.ParseVideoTag(c.in)
			if !parsed(t, err, c.err) {
				return
			}
			if got.Codec != c.codec || got.Kind != c.kind || got.Keyframe != c.key || got.CTS != c.cts || !bytes.Equal(got.Data, c.data) {
				t.Fatalf("got %+v", got)
			}
		})
	}
}

// parsed checks a parser's error against the case; it reports whether there is a result to
// check.
func parsed(t *testing.T, err error, wantErr bool) bool {
	t.Helper()
	if wantErr {
		if !errors.Is(err, rtmpproto.ErrMalformed) {
			t.Fatalf("want a malformed error, got %v", err)
		}
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

func TestParseAudioTag(t *testing.T) {
	opusHead := append([]byte("OpusHead"), 1, 2, 0, 0, 0x80, 0xbb, 0, 0, 0, 0, 0)
	cases := []struct {
		name  string
		in    []byte
		codec string
		kind  rtmpproto.PacketKind
		data  []byte
		err   bool
	}{
		{"aac sequence header", rtmptest.AACTag(0, rtmptest.ASC), sfu.CodecAAC, rtmpproto.PacketSequenceStart, rtmptest.ASC, false},
		{"aac raw", rtmptest.AACTag(1, []byte{0x21, 0x10}), sfu.CodecAAC, rtmpproto.PacketFrame, []byte{0x21, 0x10}, false},
		{"aac truncated", []byte{0xaf}, "", 0, nil, true},
		{"aac bad packet type", rtmptest.AACTag(4, nil), "", 0, nil, true},
		{"mp3 unsupported", []byte{0x2f, 1, 2}, "", rtmpproto.PacketFrame, []byte{1, 2}, false},
		{"ex opus sequence start", append([]byte{0x90 | rtmpproto.ExSequenceStart, 'O', 'p', 'u', 's'}, opusHead...), sfu.CodecOpus, rtmpproto.PacketSequenceStart, opusHead, false},
		{"ex opus frame", []byte{0x90 | rtmpproto.ExCodedFrames, 'O', 'p', 'u', 's', 0xfc, 1}, sfu.CodecOpus, rtmpproto.PacketFrame, []byte{0xfc, 1}, false},
		{"ex mp4a frame", []byte{0x90 | rtmpproto.ExCodedFrames, 'm', 'p', '4', 'a', 7}, sfu.CodecAAC, rtmpproto.PacketFrame, []byte{7}, false},
		{"ex multitrack ignored", []byte{0x90 | rtmpproto.ExAudioMultitr, 0}, "", rtmpproto.PacketOther, nil, false},
		{"ex truncated", []byte{0x91, 'O'}, "", 0, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := rtmpproto.ParseAudioTag(c.in)
			if !parsed(t, err, c.err) {
				return
			}
			if got.Codec != c.codec || got.Kind != c.kind || !bytes.Equal(got.Data, c.data) {
				t.Fatalf("got %+v", got)
			}
		})
	}
}

func TestConfigRecords(t *testing.T) {
	cfg, err := rtmpproto.ParseAVCC(rtmptest.AVCConfigRecord(rtmptest.SPS, rtmptest.PPS))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LengthSize != 4 || len(cfg.Params) != 2 || !bytes.Equal(cfg.Params[0], rtmptest.SPS) || !bytes.Equal(cfg.Params[1], rtmptest.PPS) {
		t.Fatalf("avcC %+v", cfg)
	}
	vps, sps, pps := []byte{0x40, 0x01, 0x0c}, []byte{0x42, 0x01, 0x01}, []byte{0x44, 0x01, 0xc1}
	hc, err := rtmpproto.ParseHVCC(rtmptest.HEVCConfigRecord(vps, sps, pps))
	if err != nil {
		t.Fatal(err)
	}
	if hc.LengthSize != 4 || len(hc.Params) != 3 || !bytes.Equal(hc.Params[0], vps) || !bytes.Equal(hc.Params[2], pps) {
		t.Fatalf("hvcC %+v", hc)
	}
	for _, bad := range [][]byte{nil, {1, 2, 3}, rtmptest.AVCConfigRecord(rtmptest.SPS, rtmptest.PPS)[:12], {1, 0x64, 0, 0x0d, 0xff, 0xe0, 0}} {
		if _, err := rtmpproto.ParseAVCC(bad); !errors.Is(err, rtmpproto.ErrMalformed) {
			t.Errorf("rtmpproto.ParseAVCC(%x): %v", bad, err)
		}
	}
}

func TestSplitNALUs(t *testing.T) {
	au := rtmptest.LengthPrefixed([]byte{0x65, 1, 2}, []byte{0x41, 3})
	got, err := rtmpproto.SplitNALUs(nil, au, 4)
	if err != nil || len(got) != 2 || !bytes.Equal(got[1], []byte{0x41, 3}) {
		t.Fatalf("%x %v", got, err)
	}
	if _, err := rtmpproto.SplitNALUs(nil, []byte{0, 0, 0, 9, 1}, 4); !errors.Is(err, rtmpproto.ErrMalformed) {
		t.Fatalf("overrun: %v", err)
	}
	got, err = rtmpproto.SplitNALUs(nil, []byte{0, 2, 0x41, 1, 0, 0}, 2)
	if err != nil || len(got) != 1 {
		t.Fatalf("2-byte lengths, empty nal unit skipped: %x %v", got, err)
	}
}

func TestSplitOBUs(t *testing.T) {
	// A temporal delimiter, a sequence header with a size field, a frame with an extension
	// header and a size field.
	tu := []byte{0x12, 0x00, 0x0a, 0x02, 0xaa, 0xbb, 0x36, 0x10, 0x03, 1, 2, 3}
	got, err := rtmpproto.SplitOBUs(nil, tu)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]byte{{0x08, 0xaa, 0xbb}, {0x34, 0x10, 1, 2, 3}}
	if len(got) != 2 || !bytes.Equal(got[0], want[0]) || !bytes.Equal(got[1], want[1]) {
		t.Fatalf("got %x", got)
	}
	if _, err := rtmpproto.SplitOBUs(nil, []byte{0x0a, 0x05, 1}); !errors.Is(err, rtmpproto.ErrMalformed) {
		t.Fatalf("overrun: %v", err)
	}
}

// FuzzFLV feeds arbitrary bytes to every FLV and codec-configuration parser: none may panic,
// and what they return must lie within their input.
func FuzzFLV(f *testing.F) {
	f.Add(rtmptest.AVCTag(true, 0, 0, rtmptest.AVCConfigRecord(rtmptest.SPS, rtmptest.PPS)))
	f.Add(rtmptest.AVCTag(true, 1, 33, rtmptest.LengthPrefixed(rtmptest.FakeIDR(40), rtmptest.FakeSlice(10))))
	f.Add(rtmptest.ExVideoTag("hvc1", rtmpproto.ExSequenceStart, true, 0, rtmptest.HEVCConfigRecord([]byte{0x40, 1}, []byte{0x42, 1}, []byte{0x44, 1})))
	f.Add(rtmptest.ExVideoTag("av01", rtmpproto.ExSequenceStart, true, 0, []byte{0x81, 0, 0, 0, 0x0a, 1, 0}))
	f.Add(rtmptest.AACTag(0, rtmptest.ASC))
	f.Add([]byte{0x90 | rtmpproto.ExModEx, 0xff, 0, 1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		inside := func(s []byte) {
			if len(s) > 0 && (len(s) > len(b) || !overlaps(b, s)) {
				t.Fatalf("a result is not a slice of the input")
			}
		}
		if v, err := rtmpproto.ParseVideoTag(b); err == nil {
			inside(v.Data)
			if units, err := rtmpproto.SplitNALUs(nil, v.Data, 4); err == nil {
				for _, u := range units {
					inside(u)
				}
			}
			_, _ = rtmpproto.SplitOBUs(nil, v.Data)
			for _, parse := range []func([]byte) (rtmpproto.CodecConfig, error){rtmpproto.ParseAVCC, rtmpproto.ParseHVCC} {
				if c, err := parse(v.Data); err == nil {
					for _, p := range c.Params {
						inside(p)
					}
				}
			}
			_, _ = rtmpproto.ParseAV1C(v.Data)
		}
		if a, err := rtmpproto.ParseAudioTag(b); err == nil {
			inside(a.Data)
		}
		_, _ = rtmpproto.SplitNALUs(nil, b, int(len(b)%5))
	})
}

// TestTagRoundTrip: the encoders of what the broadcaster sends and the parsers of what the
// server takes share one table.
func TestTagRoundTrip(t *testing.T) {
	seqHeader, err := rtmpproto.AVCSequenceHeader(rtmptest.SPS, rtmptest.PPS)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		video bool
		body  []byte
		kind  rtmpproto.PacketKind
		key   bool
		cts   int32
		units [][]byte // the NAL units of a frame, the SPS and PPS of a sequence header
		data  []byte   // the data of an audio tag
	}{
		{"avc sequence header", true, seqHeader, rtmpproto.PacketSequenceStart, true, 0, [][]byte{rtmptest.SPS, rtmptest.PPS}, nil},
		{"avc keyframe", true, rtmpproto.AppendAVCFrame(nil, true, 66, []byte{0, 0, 0, 2, 0x65, 1, 0, 0, 0, 2, 0x65, 2}), rtmpproto.PacketFrame, true, 66, [][]byte{{0x65, 1}, {0x65, 2}}, nil},
		{"avc frame with negative cts", true, rtmpproto.AppendAVCFrame(nil, false, -33, []byte{0, 0, 0, 2, 0x41, 9}), rtmpproto.PacketFrame, false, -33, [][]byte{{0x41, 9}}, nil},
		{"avc end of sequence", true, rtmpproto.AVCEndOfSequence(), rtmpproto.PacketSequenceEnd, true, 0, nil, nil},
		{"aac sequence header", false, rtmpproto.AACSequenceHeader(rtmptest.ASC), rtmpproto.PacketSequenceStart, false, 0, nil, rtmptest.ASC},
		{"aac frame", false, rtmpproto.AppendAACFrame(nil, []byte{0x21, 0x10}), rtmpproto.PacketFrame, false, 0, nil, []byte{0x21, 0x10}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !c.video {
				a, err := rtmpproto.ParseAudioTag(c.body)
				if err != nil || a.Codec != sfu.CodecAAC || a.Kind != c.kind || !bytes.Equal(a.Data, c.data) {
					t.Fatalf("%+v %v", a, err)
				}
				return
			}
			v, err := rtmpproto.ParseVideoTag(c.body)
			if err != nil || v.Codec != sfu.CodecH264 || v.Kind != c.kind || v.Keyframe != c.key || v.CTS != c.cts {
				t.Fatalf("%+v %v", v, err)
			}
			var units [][]byte
			switch c.kind {
			case rtmpproto.PacketSequenceStart:
				cfg, err := rtmpproto.ParseAVCC(v.Data)
				if err != nil || cfg.LengthSize != 4 {
					t.Fatalf("%+v %v", cfg, err)
				}
				units = cfg.Params
			case rtmpproto.PacketFrame:
				if units, err = rtmpproto.SplitNALUs(nil, v.Data, 4); err != nil {
					t.Fatal(err)
				}
			default: // end of sequence: no data
			}
			if len(units) != len(c.units) {
				t.Fatalf("%d units, want %d", len(units), len(c.units))
			}
			for i := range units {
				if !bytes.Equal(units[i], c.units[i]) {
					t.Fatalf("unit %d: %x, want %x", i, units[i], c.units[i])
				}
			}
		})
	}
	if _, err := rtmpproto.AVCSequenceHeader([]byte{0x67, 1}, rtmptest.PPS); !errors.Is(err, rtmpproto.ErrParams) {
		t.Fatalf("short sps: %v", err)
	}
}

// overlaps reports whether s points into b's backing array.
func overlaps(b, s []byte) bool {
	if len(b) == 0 || len(s) == 0 {
		return false
	}
	full := b[:cap(b)]
	for i := range full {
		if &full[i] == &s[0] {
			return true
		}
	}
	return false
}
