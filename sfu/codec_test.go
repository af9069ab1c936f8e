package sfu

import "testing"

func TestIsKeyframe(t *testing.T) {
	for _, tc := range []struct {
		name    string
		codec   string
		payload []byte
		want    bool
	}{
		{"h264 idr", CodecH264, []byte{0x65, 0x88}, true},
		{"h264 sps", CodecH264, []byte{0x67, 0x42}, true},
		{"h264 non-idr", CodecH264, []byte{0x41, 0x9a}, false},
		{"h264 stap-a sps pps idr", CodecH264, []byte{0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce, 0, 2, 0x65, 0x88}, true},
		{"h264 stap-a non-idr", CodecH264, []byte{0x78, 0, 2, 0x41, 0x9a}, false},
		{"h264 stap-a truncated", CodecH264, []byte{0x78, 0, 9, 0x65}, false},
		{"h264 fu-a idr start", CodecH264, []byte{0x7c, 0x85, 0x88}, true},
		{"h264 fu-a idr middle", CodecH264, []byte{0x7c, 0x05, 0x88}, false},
		{"h264 empty", CodecH264, nil, false},
		{"h265 idr", CodecH265, []byte{19 << 1, 1}, true},
		{"h265 vps", CodecH265, []byte{32 << 1, 1}, true},
		{"h265 trail", CodecH265, []byte{1 << 1, 1}, false},
		{"h265 fu idr start", CodecH265, []byte{49 << 1, 1, 0x80 | 19}, true},
		{"h265 ap with vps", CodecH265, []byte{48 << 1, 1, 0, 2, 32 << 1, 1}, true},
		{"vp8 key", CodecVP8, []byte{0x10, 0x00}, true},
		{"vp8 inter", CodecVP8, []byte{0x10, 0x01}, false},
		{"vp8 key with picture id", CodecVP8, []byte{0x90, 0x80, 0x81, 0x23, 0x00}, true},
		{"vp8 not start", CodecVP8, []byte{0x00, 0x00}, false},
		{"vp8 truncated ext", CodecVP8, []byte{0x90}, false},
		{"vp9 key start", CodecVP9, []byte{0x08}, true},
		{"vp9 inter", CodecVP9, []byte{0x48}, false},
		{"av1 new sequence", CodecAV1, []byte{0x08}, true},
		{"av1 continuation", CodecAV1, []byte{0x80}, false},
		{"opus", CodecOpus, []byte{0xff}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsKeyframe(tc.codec, tc.payload); got != tc.want {
				t.Fatalf("IsKeyframe = %v, want %v", got, tc.want)
			}
		})
	}
}

func FuzzIsKeyframe(f *testing.F) {
	f.Add(CodecH264, []byte{0x78, 0, 2, 0x67, 0x42})
	f.Add(CodecH265, []byte{48 << 1, 1, 0, 2, 32 << 1, 1})
	f.Add(CodecVP8, []byte{0x90, 0x80, 0x81, 0x23, 0x00})
	f.Fuzz(func(t *testing.T, codec string, payload []byte) {
		IsKeyframe(codec, payload) // must not panic
	})
}

func TestCodecMime(t *testing.T) {
	for _, name := range []string{CodecH264, CodecH265, CodecVP8, CodecVP9, CodecAV1, CodecOpus, CodecAAC, CodecPCMU, CodecPCMA, CodecG722} {
		c := Codec{Name: name}
		if got := CodecFromMime(c.MimeType()); got != name {
			t.Errorf("round trip of %s through %s gave %q", name, c.MimeType(), got)
		}
	}
}

func TestVideoSize(t *testing.T) {
	// A 1280x720 High profile SPS (libx264), alone and inside a STAP-A with its PPS.
	sps := []byte{0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60}
	stap := append([]byte{0x78, 0, byte(len(sps))}, sps...)
	stap = append(stap, 0, 4, 0x68, 0xeb, 0xe3, 0xcb)
	for _, p := range [][]byte{sps, stap} {
		w, h, ok := VideoSize(CodecH264, p)
		if !ok || w != 1280 || h != 720 {
			t.Fatalf("VideoSize = %d %d %v, want 1280x720", w, h, ok)
		}
	}
	if _, _, ok := VideoSize(CodecH264, []byte{0x65, 1, 2}); ok {
		t.Fatal("an IDR slice has no size")
	}
}
