package broadcast

import (
	"bytes"
	"testing"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
)

// TestAACDepacketizer reads back what gortsplib's RFC 3640 encoder (the one sfu/media uses)
// writes: several access units per packet, and one access unit fragmented over packets.
func TestAACDepacketizer(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sizes []int
	}{
		{"one", []int{200}},
		{"several", []int{100, 150, 120}},
		{"fragmented", []int{3000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			enc := &rtpmpeg4audio.Encoder{PayloadType: 97, PayloadMaxSize: 1150, SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3}
			if err := enc.Init(); err != nil {
				t.Fatal(err)
			}
			var aus [][]byte
			for i, n := range tc.sizes {
				aus = append(aus, bytes.Repeat([]byte{byte(i + 1)}, n))
			}
			pkts, err := enc.Encode(aus)
			if err != nil {
				t.Fatal(err)
			}
			d := aacDepacketizer{sizeLength: 13, indexLength: 3}
			var got [][]byte
			var tss []uint32
			for _, p := range pkts {
				if err := d.push(p.Timestamp, p.Marker, p.Payload, func(ts uint32, au []byte) {
					got = append(got, append([]byte(nil), au...))
					tss = append(tss, ts-pkts[0].Timestamp)
				}); err != nil {
					t.Fatal(err)
				}
			}
			if len(got) != len(aus) {
				t.Fatalf("%d access units, want %d", len(got), len(aus))
			}
			for i := range aus {
				if !bytes.Equal(got[i], aus[i]) || tss[i] != uint32(i*1024) {
					t.Errorf("access unit %d: %d bytes at %d", i, len(got[i]), tss[i])
				}
			}
		})
	}
}

// TestH264Depacketizer reads back gortsplib's RFC 6184 encoder: single NAL units, STAP-A
// (parameter sets) and FU-A (a large slice).
func TestH264Depacketizer(t *testing.T) {
	enc := &rtph264.Encoder{PayloadType: 96, PayloadMaxSize: 1150, PacketizationMode: 1}
	if err := enc.Init(); err != nil {
		t.Fatal(err)
	}
	au := [][]byte{{0x67, 0x42, 0xc0, 0x1f, 1, 2}, {0x68, 0xce, 0x3c, 0x80}, append([]byte{0x65}, bytes.Repeat([]byte{7}, 5000)...)}
	var d h264Depacketizer
	for range 2 {
		pkts, err := enc.Encode(au)
		if err != nil {
			t.Fatal(err)
		}
		var got [][][]byte
		for _, p := range pkts {
			if err := d.push(p.Timestamp, p.Marker, p.Payload, func(_ uint32, nalus [][]byte) {
				var c [][]byte
				for _, n := range nalus {
					c = append(c, append([]byte(nil), n...))
				}
				got = append(got, c)
			}); err != nil {
				t.Fatal(err)
			}
		}
		if len(got) != 1 || len(got[0]) != 3 {
			t.Fatalf("access units %d", len(got))
		}
		for i := range au {
			if !bytes.Equal(got[0][i], au[i]) {
				t.Errorf("nal unit %d differs", i)
			}
		}
	}
}
