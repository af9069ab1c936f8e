package rtmpproto_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/sluice-media/sluice/sfu/rtmpproto"
)

// TestChunkRoundTrip: what AppendMessage writes, the Reader reads back, for small and large
// messages, chunk sizes, and timestamps past the 24-bit field (extended timestamp in every
// chunk).
func TestChunkRoundTrip(t *testing.T) {
	for _, chunk := range []uint32{128, 4096} {
		for _, ts := range []uint32{0, 1000, 0xfffffe, 0xffffff, 0x12345678} {
			for _, size := range []int{1, 128, 129, 5000} {
				payload := bytes.Repeat([]byte{0xab}, size)
				var wire []byte
				wire = rtmpproto.AppendMessage(wire, 6, rtmpproto.TypeVideo, 1, ts, payload, int(chunk))
				wire = rtmpproto.AppendMessage(wire, 4, rtmpproto.TypeAudio, 1, ts+1, payload[:1], int(chunk))
				r := rtmpproto.NewReader(bufio.NewReader(bytes.NewReader(wire)), rtmpproto.ClientLimits())
				if err := r.SetChunkSize([]byte{byte(chunk >> 24), byte(chunk >> 16), byte(chunk >> 8), byte(chunk)}); err != nil {
					t.Fatal(err)
				}
				m, err := r.Next()
				if err != nil || m.Timestamp != ts || m.Type != rtmpproto.TypeVideo || m.StreamID != 1 || !bytes.Equal(m.Payload, payload) {
					t.Fatalf("chunk %d ts %d size %d: %v ts %d len %d", chunk, ts, size, err, m.Timestamp, len(m.Payload))
				}
				m, err = r.Next()
				if err != nil || m.Timestamp != ts+1 || m.Type != rtmpproto.TypeAudio || len(m.Payload) != 1 {
					t.Fatalf("second message: %v %+v", err, m.Timestamp)
				}
				if r.BytesRead() != uint64(len(wire)) {
					t.Fatalf("read %d bytes of %d", r.BytesRead(), len(wire))
				}
			}
		}
	}
}

// TestMessageParts: a payload given as head and body is written as the joined payload would be,
// wherever the chunk boundaries fall.
func TestMessageParts(t *testing.T) {
	payload := make([]byte, 300)
	for i := range payload {
		payload[i] = byte(i)
	}
	for _, chunk := range []int{1, 2, 5, 128} {
		for _, split := range []int{0, 1, 5, 127, 128, 129, 300} {
			want := rtmpproto.AppendMessage(nil, 6, rtmpproto.TypeVideo, 1, 0x1000000, payload, chunk)
			got := rtmpproto.AppendMessageParts(nil, 6, rtmpproto.TypeVideo, 1, 0x1000000, payload[:split], payload[split:], chunk)
			if !bytes.Equal(got, want) {
				t.Fatalf("chunk %d split %d: parts differ from the joined payload", chunk, split)
			}
		}
	}
}

// FuzzChunkReader reads an arbitrary chunk stream as the client reads a server's: no panic,
// messages within the bound, at most MaxChunkStreams chunk streams, and Set Chunk Size
// applied as the client applies it.
func FuzzChunkReader(f *testing.F) {
	var seed []byte
	seed = rtmpproto.AppendMessage(seed, 2, rtmpproto.TypeSetChunkSize, 0, 0, []byte{0, 0, 0x10, 0}, 128)
	body, _ := rtmpproto.EncodeAMF0("_result", 1.0, nil, map[string]any{"code": "NetConnection.Connect.Success"})
	seed = rtmpproto.AppendMessage(seed, 3, rtmpproto.TypeCommandAMF0, 0, 0, body, 4096)
	f.Add(seed)
	f.Add(rtmpproto.AppendMessage(nil, 6, rtmpproto.TypeVideo, 1, 0x1000000, bytes.Repeat([]byte{1}, 300), 128))
	f.Add([]byte{0x03, 0xff, 0xff, 0xff, 0x03, 0xff, 0xff, 0x14, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	lim := rtmpproto.ClientLimits()
	f.Fuzz(func(t *testing.T, b []byte) {
		r := rtmpproto.NewReader(bufio.NewReader(bytes.NewReader(b)), lim)
		for range 1000 {
			m, err := r.Next()
			if err != nil {
				if !errors.Is(err, rtmpproto.ErrProtocol) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(m.Payload) > int(lim.MaxOther) {
				t.Fatalf("message of %d bytes", len(m.Payload))
			}
			if r.ChunkStreams() > lim.MaxChunkStreams {
				t.Fatalf("%d chunk streams", r.ChunkStreams())
			}
			if m.Type == rtmpproto.TypeSetChunkSize {
				_ = r.SetChunkSize(m.Payload)
			}
			if m.Type == rtmpproto.TypeCommandAMF0 {
				_, _ = rtmpproto.ParseCommand(m.Payload)
			}
		}
	})
}
