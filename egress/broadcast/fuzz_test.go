package broadcast

import (
	"encoding/binary"
	"testing"
)

// splitPackets cuts fuzz input into packets: each is a 2-byte length, a flags byte (bit 0:
// marker, bit 1: new timestamp) and the payload.
func splitPackets(b []byte, fn func(marker, next bool, payload []byte)) {
	for len(b) >= 3 {
		n := int(binary.BigEndian.Uint16(b))
		flags := b[2]
		b = b[3:]
		n = min(n, len(b))
		fn(flags&1 != 0, flags&2 != 0, b[:n])
		b = b[n:]
	}
}

func packetSeed(pkts ...[]byte) []byte {
	var out []byte
	for i, p := range pkts {
		flags := byte(0)
		if i == len(pkts)-1 {
			flags = 1
		}
		out = binary.BigEndian.AppendUint16(out, uint16(len(p)))
		out = append(out, flags)
		out = append(out, p...)
	}
	return out
}

// FuzzH264Depacketizer: arbitrary RTP payloads never panic, access units stay within the
// bounds, and every emitted NAL unit is non-empty.
func FuzzH264Depacketizer(f *testing.F) {
	f.Add(packetSeed([]byte{0x78, 0, 4, 0x67, 0x42, 0xc0, 0x1f, 0, 2, 0x68, 0xce}, []byte{0x7c, 0x85, 1, 2, 3}, []byte{0x7c, 0x45, 4, 5}))
	f.Add(packetSeed([]byte{0x41, 1, 2, 3}))
	f.Add(packetSeed([]byte{0x7c, 0x05, 1}, []byte{0x78, 0, 0}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var d h264Depacketizer
		ts := uint32(0)
		splitPackets(b, func(marker, next bool, payload []byte) {
			if next {
				ts += 3000
			}
			_ = d.push(ts, marker, payload, func(_ uint32, nalus [][]byte) {
				total := 0
				for _, n := range nalus {
					if len(n) == 0 {
						t.Fatal("empty nal unit")
					}
					total += len(n)
				}
				if len(nalus) > maxNALUs || total > maxAccessUnit {
					t.Fatalf("access unit of %d nal units, %d bytes", len(nalus), total)
				}
			})
		})
	})
}

// FuzzAACDepacketizer: arbitrary MPEG4-GENERIC payloads never panic and access units are
// never empty nor larger than the bound.
func FuzzAACDepacketizer(f *testing.F) {
	f.Add(packetSeed([]byte{0, 16, 0x06, 0x40, 1, 2, 3, 4, 5, 6, 7, 8}))
	f.Add(packetSeed([]byte{0, 32, 0, 0x10, 0, 0x10, 1, 2, 3, 4}))
	f.Add([]byte{0, 8, 0, 0, 16, 0xff, 0xf8, 1, 2, 3, 4, 5, 0, 5, 1, 0, 16, 0, 0x10, 9})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, sizes := range [][2]int{{13, 3}, {6, 2}, {32, 0}} {
			d := aacDepacketizer{sizeLength: sizes[0], indexLength: sizes[1]}
			splitPackets(b, func(marker, _ bool, payload []byte) {
				_ = d.push(0, marker, payload, func(_ uint32, au []byte) {
					if len(au) == 0 || len(au) > maxAccessUnit {
						t.Fatalf("access unit of %d bytes", len(au))
					}
				})
			})
		}
	})
}
