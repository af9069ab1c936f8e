package rtmp

import (
	"bytes"
	"errors"
	"testing"

	"github.com/sluice-media/sluice/sfu"
)

func TestParseVideoTag(t *testing.T) {
	cases := []struct {
		name  string
		in    []byte
		codec string
		kind  packetKind
		key   bool
		cts   int32
		data  []byte
		err   bool
	}{
		{"avc sequence header", avcTag(true, 0, 0, []byte{1, 2}), sfu.CodecH264, packetSequenceStart, true, 0, []byte{1, 2}, false},
		{"avc keyframe", avcTag(true, 1, 67, []byte{9}), sfu.CodecH264, packetFrame, true, 67, []byte{9}, false},
		{"avc negative cts", avcTag(false, 1, -33, []byte{9}), sfu.CodecH264, packetFrame, false, -33, []byte{9}, false},
		{"avc end of sequence", avcTag(false, 2, 0, nil), sfu.CodecH264, packetSequenceEnd, false, 0, []byte{}, false},
		{"avc bad packet type", avcTag(false, 7, 0, nil), sfu.CodecH264, 0, false, 0, nil, true},
		{"avc truncated", []byte{0x17, 1, 0}, "", 0, false, 0, nil, true},
		{"legacy vp6 unsupported", []byte{0x24, 1, 2}, "", packetFrame, false, 0, []byte{1, 2}, false},
		{"hvc1 sequence start", exVideoTag("hvc1", exSequenceStart, true, 0, []byte{5}), sfu.CodecH265, packetSequenceStart, true, 0, []byte{5}, false},
		{"hvc1 coded frames with cts", exVideoTag("hvc1", exCodedFrames, false, 40, []byte{6}), sfu.CodecH265, packetFrame, false, 40, []byte{6}, false},
		{"hvc1 coded frames x", exVideoTag("hvc1", exCodedFramesX, true, 0, []byte{7}), sfu.CodecH265, packetFrame, true, 0, []byte{7}, false},
		{"av01 frames carry no cts", exVideoTag("av01", exCodedFrames, true, 0, []byte{8, 9}), sfu.CodecAV1, packetFrame, true, 0, []byte{8, 9}, false},
		{"vp09 sequence start", exVideoTag("vp09", exSequenceStart, true, 0, []byte{1}), sfu.CodecVP9, packetSequenceStart, true, 0, []byte{1}, false},
		{"unknown fourcc", exVideoTag("xyz1", exCodedFramesX, true, 0, []byte{1}), "", packetFrame, true, 0, []byte{1}, false},
		{"ex metadata ignored", exVideoTag("hvc1", exMetadata, false, 0, []byte{2}), sfu.CodecH265, packetOther, false, 0, nil, false},
		{"modex then coded frames x", append([]byte{0x80 | 1<<4 | exModEx, 0, 0xaa, 0x10 | exCodedFramesX}, append([]byte("hvc1"), 3)...),
			sfu.CodecH265, packetFrame, true, 0, []byte{3}, false},
		{"truncated fourcc", []byte{0x90, 'h', 'v'}, "", 0, false, 0, nil, true},
		{"command frame", []byte{0x80 | 5<<4 | exCodedFrames, 0}, "", packetOther, false, 0, nil, false},
		{"empty", nil, "", 0, false, 0, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseVideoTag(c.in)
			if c.err {
				if !errors.Is(err, errMalformed) {
					t.Fatalf("want a malformed error, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.codec != c.codec || got.kind != c.kind || got.keyframe != c.key || got.cts != c.cts || !bytes.Equal(got.data, c.data) {
				t.Fatalf("got %+v", got)
			}
		})
	}
}

func TestParseAudioTag(t *testing.T) {
	opusHead := append([]byte("OpusHead"), 1, 2, 0, 0, 0x80, 0xbb, 0, 0, 0, 0, 0)
	cases := []struct {
		name  string
		in    []byte
		codec string
		kind  packetKind
		data  []byte
		err   bool
	}{
		{"aac sequence header", aacTag(0, testASC), sfu.CodecAAC, packetSequenceStart, testASC, false},
		{"aac raw", aacTag(1, []byte{0x21, 0x10}), sfu.CodecAAC, packetFrame, []byte{0x21, 0x10}, false},
		{"aac truncated", []byte{0xaf}, "", 0, nil, true},
		{"aac bad packet type", aacTag(4, nil), "", 0, nil, true},
		{"mp3 unsupported", []byte{0x2f, 1, 2}, "", packetFrame, []byte{1, 2}, false},
		{"ex opus sequence start", append([]byte{0x90 | exSequenceStart, 'O', 'p', 'u', 's'}, opusHead...), sfu.CodecOpus, packetSequenceStart, opusHead, false},
		{"ex opus frame", []byte{0x90 | exCodedFrames, 'O', 'p', 'u', 's', 0xfc, 1}, sfu.CodecOpus, packetFrame, []byte{0xfc, 1}, false},
		{"ex mp4a frame", []byte{0x90 | exCodedFrames, 'm', 'p', '4', 'a', 7}, sfu.CodecAAC, packetFrame, []byte{7}, false},
		{"ex multitrack ignored", []byte{0x90 | exAudioMultitr, 0}, "", packetOther, nil, false},
		{"ex truncated", []byte{0x91, 'O'}, "", 0, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseAudioTag(c.in)
			if c.err {
				if !errors.Is(err, errMalformed) {
					t.Fatalf("want a malformed error, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.codec != c.codec || got.kind != c.kind || !bytes.Equal(got.data, c.data) {
				t.Fatalf("got %+v", got)
			}
		})
	}
}

func TestConfigRecords(t *testing.T) {
	cfg, err := parseAVCC(avcConfigRecord(testSPS, testPPS))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.lengthSize != 4 || len(cfg.params) != 2 || !bytes.Equal(cfg.params[0], testSPS) || !bytes.Equal(cfg.params[1], testPPS) {
		t.Fatalf("avcC %+v", cfg)
	}
	if w, h := paramsSize(sfu.CodecH264, cfg.params); w != 320 || h != 240 {
		t.Fatalf("size %dx%d", w, h)
	}
	vps, sps, pps := []byte{0x40, 0x01, 0x0c}, []byte{0x42, 0x01, 0x01}, []byte{0x44, 0x01, 0xc1}
	hc, err := parseHVCC(hevcConfigRecord(vps, sps, pps))
	if err != nil {
		t.Fatal(err)
	}
	if hc.lengthSize != 4 || len(hc.params) != 3 || !bytes.Equal(hc.params[0], vps) || !bytes.Equal(hc.params[2], pps) {
		t.Fatalf("hvcC %+v", hc)
	}
	for _, bad := range [][]byte{nil, {1, 2, 3}, avcConfigRecord(testSPS, testPPS)[:12], {1, 0x64, 0, 0x0d, 0xff, 0xe0, 0}} {
		if _, err := parseAVCC(bad); !errors.Is(err, errMalformed) {
			t.Errorf("parseAVCC(%x): %v", bad, err)
		}
	}
}

func TestSplitNALUs(t *testing.T) {
	au := lengthPrefixed([]byte{0x65, 1, 2}, []byte{0x41, 3})
	got, err := splitNALUs(nil, au, 4)
	if err != nil || len(got) != 2 || !bytes.Equal(got[1], []byte{0x41, 3}) {
		t.Fatalf("%x %v", got, err)
	}
	if _, err := splitNALUs(nil, []byte{0, 0, 0, 9, 1}, 4); !errors.Is(err, errMalformed) {
		t.Fatalf("overrun: %v", err)
	}
	got, err = splitNALUs(nil, []byte{0, 2, 0x41, 1, 0, 0}, 2)
	if err != nil || len(got) != 1 {
		t.Fatalf("2-byte lengths, empty nal unit skipped: %x %v", got, err)
	}
}

func TestSplitOBUs(t *testing.T) {
	// A temporal delimiter, a sequence header with a size field, a frame with an extension
	// header and a size field.
	tu := []byte{0x12, 0x00, 0x0a, 0x02, 0xaa, 0xbb, 0x36, 0x10, 0x03, 1, 2, 3}
	got, err := splitOBUs(nil, tu)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]byte{{0x08, 0xaa, 0xbb}, {0x34, 0x10, 1, 2, 3}}
	if len(got) != 2 || !bytes.Equal(got[0], want[0]) || !bytes.Equal(got[1], want[1]) {
		t.Fatalf("got %x", got)
	}
	if _, err := splitOBUs(nil, []byte{0x0a, 0x05, 1}); !errors.Is(err, errMalformed) {
		t.Fatalf("overrun: %v", err)
	}
}

// FuzzFLV feeds arbitrary bytes to every FLV and codec-configuration parser: none may panic,
// and what they return must lie within their input.
func FuzzFLV(f *testing.F) {
	f.Add(avcTag(true, 0, 0, avcConfigRecord(testSPS, testPPS)))
	f.Add(avcTag(true, 1, 33, lengthPrefixed(fakeIDR(40), fakeSlice(10))))
	f.Add(exVideoTag("hvc1", exSequenceStart, true, 0, hevcConfigRecord([]byte{0x40, 1}, []byte{0x42, 1}, []byte{0x44, 1})))
	f.Add(exVideoTag("av01", exSequenceStart, true, 0, []byte{0x81, 0, 0, 0, 0x0a, 1, 0}))
	f.Add(aacTag(0, testASC))
	f.Add([]byte{0x90 | exModEx, 0xff, 0, 1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		inside := func(s []byte) {
			if len(s) > 0 && (len(s) > len(b) || !overlaps(b, s)) {
				t.Fatalf("a result is not a slice of the input")
			}
		}
		if v, err := parseVideoTag(b); err == nil {
			inside(v.data)
			if units, err := splitNALUs(nil, v.data, 4); err == nil {
				for _, u := range units {
					inside(u)
				}
			}
			_, _ = splitOBUs(nil, v.data)
			if c, err := parseAVCC(v.data); err == nil {
				paramsSize(sfu.CodecH264, c.params)
			}
			if c, err := parseHVCC(v.data); err == nil {
				paramsSize(sfu.CodecH265, c.params)
			}
			_, _ = parseAV1C(v.data)
		}
		if a, err := parseAudioTag(b); err == nil {
			inside(a.data)
		}
		_, _ = splitNALUs(nil, b, int(len(b)%5))
	})
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
