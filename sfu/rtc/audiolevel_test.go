package rtc

import (
	"testing"

	"github.com/pion/rtp"

	"github.com/sluice-media/sluice/sfu"
)

// levelPacket marshals an RTP packet with the extensions exts (id → value) in the one-byte or
// two-byte header form.
func levelPacket(t testing.TB, twoByte bool, exts map[uint8][]byte) []byte {
	t.Helper()
	h := rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: 7, Timestamp: 960, SSRC: 42, CSRC: []uint32{1, 2}}
	if len(exts) > 0 {
		h.Extension = true
		h.ExtensionProfile = rtp.ExtensionProfileOneByte
		if twoByte {
			h.ExtensionProfile = rtp.ExtensionProfileTwoByte
		}
		for id := uint8(1); id < 20; id++ {
			if v, ok := exts[id]; ok {
				if err := h.SetExtension(id, v); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	b, err := (&rtp.Packet{Header: h, Payload: []byte{0xfc, 1, 2}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// AudioLevelOf reads the level of the negotiated extension id among others, in both header
// forms, masks the voice activity bit, and refuses what is not there.
func TestAudioLevelOf(t *testing.T) {
	cases := []struct {
		name    string
		twoByte bool
		exts    map[uint8][]byte
		id      uint8
		level   uint8
		ok      bool
	}{
		{"one-byte, alone", false, map[uint8][]byte{1: {0x80 | 30}}, 1, 30, true},
		{"one-byte, after others", false, map[uint8][]byte{3: {1, 2, 3, 4}, 5: {127}, 9: {1}}, 5, 127, true},
		{"two-byte", true, map[uint8][]byte{2: {0, 0}, 4: {0x80 | 12}}, 4, 12, true},
		{"another id", false, map[uint8][]byte{1: {10}}, 2, 0, false},
		{"no extension", false, nil, 1, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := levelPacket(t, c.twoByte, c.exts)
			level, ok := AudioLevelOf(b, c.id)
			if level != c.level || ok != c.ok {
				t.Errorf("AudioLevelOf = %d, %v; want %d, %v", level, ok, c.level, c.ok)
			}
		})
	}
	b := levelPacket(t, false, map[uint8][]byte{1: {10}})
	for n := range len(b) - 3 { // cut inside the header or its extension
		if _, ok := AudioLevelOf(b[:n], 1); ok {
			t.Errorf("a packet cut to %d bytes gave a level", n)
		}
	}
}

// FuzzAudioLevelOf: any bytes, no panic; a level is at most 127.
func FuzzAudioLevelOf(f *testing.F) {
	f.Add(levelPacket(f, false, map[uint8][]byte{1: {10}}), uint8(1))
	f.Add(levelPacket(f, true, map[uint8][]byte{3: {1, 2}, 1: {90}}), uint8(1))
	f.Fuzz(func(t *testing.T, b []byte, id uint8) {
		if level, ok := AudioLevelOf(b, id); ok && level > 127 {
			t.Errorf("level %d", level)
		}
	})
}

// BenchmarkAudioLevelOf reads the level of a browser's audio packet (three extensions) into a
// meter: the per-packet work of an audio track, allocating nothing.
func BenchmarkAudioLevelOf(b *testing.B) {
	pkt := levelPacket(b, false, map[uint8][]byte{1: {0x80 | 40}, 2: {1, 2, 3}, 3: {0, 1}})
	meter := sfu.NewAudioLevel()
	b.ReportAllocs()
	for b.Loop() {
		if level, ok := AudioLevelOf(pkt, 1); ok {
			meter.Observe(level)
		}
	}
}
