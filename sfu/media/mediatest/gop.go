// Package mediatest makes media for the tests and benchmarks of frame readers and muxers.
package mediatest

import (
	"bytes"
	"testing"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"

	"github.com/sluice-media/sluice/sfu"
)

// H264GOP is one second of H.264 at 30 fps as media.Writer packetizes it (1,150-byte payloads,
// packetization mode 1): a 20 kB IDR after sps and pps, then 6 kB P slices; timestamps step by
// 3000 from 0.
func H264GOP(tb testing.TB, sps, pps []byte) []*sfu.Packet {
	tb.Helper()
	enc := &rtph264.Encoder{PayloadType: 96, PayloadMaxSize: 1150, PacketizationMode: 1}
	if err := enc.Init(); err != nil {
		tb.Fatal(err)
	}
	var out []*sfu.Packet
	for i := range 30 {
		au := [][]byte{append([]byte{0x41}, bytes.Repeat([]byte{byte(i)}, 6000)...)}
		if i == 0 {
			au = [][]byte{sps, pps, append([]byte{0x65}, bytes.Repeat([]byte{9}, 20000)...)}
		}
		pkts, err := enc.Encode(au)
		if err != nil {
			tb.Fatal(err)
		}
		for _, p := range pkts {
			p.Timestamp = uint32(i * 3000)
			out = append(out, &sfu.Packet{Header: p.Header, Payload: p.Payload})
		}
	}
	return out
}
