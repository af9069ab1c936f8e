package transcode

import (
	"bytes"
	"testing"

	"github.com/pion/webrtc/v4/pkg/media/ivfreader"
)

// What ivfWriter writes, pion's IVF reader reads back: header, sizes, frames and times.
func TestIVFRoundTrip(t *testing.T) {
	// A VP8 keyframe's first bytes: frame tag, start code, 320x240.
	key := []byte{0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00, 0xaa, 0xbb}
	frames := [][]byte{key, {0x31, 1, 2, 3}, {0x31, 4}}
	var buf bytes.Buffer
	w := newIVFWriter(&buf, "VP80")
	for i, f := range frames {
		if err := w.writeFrame(tsOrigin+int64(i)*3000, f); err != nil {
			t.Fatal(err)
		}
	}
	r, hdr, err := ivfreader.NewWith(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if hdr.FourCC != "VP80" || hdr.Width != 320 || hdr.Height != 240 || hdr.TimebaseDenominator != 90000 || hdr.TimebaseNumerator != 1 {
		t.Fatalf("header %+v", hdr)
	}
	for i, want := range frames {
		got, fh, err := r.ParseNextFrame()
		if err != nil {
			t.Fatal(err)
		}
		// pion reports pts*den/num.
		if !bytes.Equal(got, want) || fh.Timestamp/90000 != uint64(tsOrigin+i*3000) {
			t.Fatalf("frame %d: %x at %d", i, got, fh.Timestamp/90000)
		}
	}
	if w, h := vp8Size([]byte{0x31, 0, 0, 0x9d, 0x01, 0x2a, 1, 0, 1, 0}); w != 0 || h != 0 {
		t.Fatal("an interframe has no size")
	}
}
