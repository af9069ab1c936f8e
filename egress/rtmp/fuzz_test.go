package rtmp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// FuzzAMF0 decodes arbitrary AMF0: no panic, no allocation beyond the input's size, and what
// decodes re-encodes to something that decodes again to as many values.
func FuzzAMF0(f *testing.F) {
	for _, v := range [][]any{
		{"_result", 1.0, map[string]any{"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0}, map[string]any{"level": "status", "code": "NetConnection.Connect.Success", "objectEncoding": 0.0}},
		{"onStatus", 0.0, nil, map[string]any{"level": "error", "code": "NetStream.Publish.BadName", "description": "key in use"}},
		{"_error", 5.0, nil, map[string]any{"level": "error", "code": "NetStream.Publish.Denied"}},
		{"_result", 4.0, nil, 1.0},
	} {
		b, err := encodeAMF0(v...)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{amfStrictArray, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{amfLongString, 0xff, 0xff, 0xff, 0xff, 'a'})
	f.Add([]byte{amfECMAArray, 0, 0, 0, 1, 0, 1, 'a', amfNumber, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, amfObjectEnd})
	f.Fuzz(func(t *testing.T, b []byte) {
		values, err := decodeAMF0(b)
		if err != nil {
			if !errors.Is(err, errAMF) {
				t.Fatalf("error %v does not wrap errAMF", err)
			}
			return
		}
		if len(values) > len(b) {
			t.Fatalf("%d values from %d bytes", len(values), len(b))
		}
		if _, err := parseCommand(b); err != nil && !errors.Is(err, errAMF) {
			t.Fatal(err)
		}
		re, err := encodeAMF0(values...)
		if err != nil {
			return // values go-rtmp's encoder does not write (strict arrays of mixed values)
		}
		again, err := decodeAMF0(re)
		if err != nil || len(again) != len(values) {
			t.Fatalf("re-encoded values decode to %d (%v), want %d", len(again), err, len(values))
		}
	})
}

// FuzzChunkReader reads an arbitrary chunk stream as the client reads a server's: no panic,
// messages within the bound, at most maxInChunkStreams chunk streams, and Set Chunk Size
// applied as the client applies it.
func FuzzChunkReader(f *testing.F) {
	var seed []byte
	seed = appendMessage(seed, csControl, typeSetChunkSize, 0, 0, []byte{0, 0, 0x10, 0}, 128)
	body, _ := encodeAMF0("_result", 1.0, nil, map[string]any{"code": "NetConnection.Connect.Success"})
	seed = appendMessage(seed, csCommand, typeCommandAMF0, 0, 0, body, 4096)
	f.Add(seed)
	f.Add(appendMessage(nil, csVideo, typeVideo, 1, 0x1000000, bytes.Repeat([]byte{1}, 300), 128))
	f.Add([]byte{0x03, 0xff, 0xff, 0xff, 0x03, 0xff, 0xff, 0x14, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := newChunkReader(bufio.NewReader(bytes.NewReader(b)))
		for range 1000 {
			m, err := r.next()
			if err != nil {
				if !errors.Is(err, errChunk) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(m.payload) > maxInMessage {
				t.Fatalf("message of %d bytes", len(m.payload))
			}
			if len(r.streams) > maxInChunkStreams {
				t.Fatalf("%d chunk streams", len(r.streams))
			}
			if m.typ == typeSetChunkSize && len(m.payload) >= 4 {
				_ = r.setChunkSize(uint32(m.payload[0])<<24 | uint32(m.payload[1])<<16 | uint32(m.payload[2])<<8 | uint32(m.payload[3]))
			}
			if m.typ == typeCommandAMF0 {
				_, _ = parseCommand(m.payload)
			}
		}
	})
}

// FuzzParseURL: no panic, and an error never quotes the URL (it may hold a stream key).
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"rtmp://live.twitch.tv/app/live_123_abc", "rtmps://a.rtmps.youtube.com/live2/abcd-efgh", "rtmp://h:1/a/b?c=d", "rtmp://[::1]:1935/live/k", "rtmp://x/%zz/k"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tg, err := ParseURL(s)
		if err != nil {
			if len(s) > 12 && strings.Contains(err.Error(), s) {
				t.Fatalf("error quotes the url: %v", err)
			}
			return
		}
		if strings.Contains(tg.Redacted(), tg.Stream) && len(tg.Stream) >= 3 && !strings.Contains(tg.TCURL, tg.Stream) {
			t.Fatalf("redacted %q shows the key %q", tg.Redacted(), tg.Stream)
		}
	})
}
