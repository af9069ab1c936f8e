package rtmpproto_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/sluice-media/sluice/sfu/rtmpproto"
	"github.com/sluice-media/sluice/sfu/rtmpproto/rtmptest"
)

// trickle is a reader that returns at most a few bytes per call, to split every unit.
type trickle struct {
	b   []byte
	rnd *rand.Rand
}

func (t *trickle) Read(p []byte) (int, error) {
	if len(t.b) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(t.b), 1+t.rnd.IntN(300))
	copy(p, t.b[:n])
	t.b = t.b[n:]
	return n, nil
}

// readGuarded reads everything the guard lets through, with small reads.
func readGuarded(in []byte, lim rtmpproto.Limits, seed uint64) ([]byte, error) {
	g := rtmpproto.NewGuard(&trickle{b: in, rnd: rand.New(rand.NewPCG(seed, 1))}, lim)
	var out []byte
	buf := make([]byte, 97)
	for {
		n, err := g.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, err
		}
	}
}

// validSession is what OBS sends, with 10 video frames of 9000 bytes.
func validSession() []byte { return rtmptest.Session(10, 9000) }

func TestGuardPassesAValidSession(t *testing.T) {
	in := validSession()
	for seed := range uint64(20) {
		out, err := readGuarded(in, rtmpproto.ServerLimits(1<<20), seed)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("seed %d: the guard changed the stream (%d bytes in, %d out)", seed, len(in), len(out))
		}
	}
}

func TestGuardHoldsCommandsUntilValidated(t *testing.T) {
	// A command split in two chunks with an audio message between them: nothing after the
	// command's first chunk may be delivered before the command is complete.
	c := rtmptest.NewChunker()
	cmd := rtmptest.Connect().Str(string(bytes.Repeat([]byte("x"), 100)))
	c.Header(3, 0, len(cmd), rtmpproto.TypeCommandAMF0, 0)
	headerEnd := len(c.B) // handshake + header of the command
	c.B = append(c.B, cmd[:128]...)
	c.Msg(4, 0, rtmpproto.TypeAudio, 1, rtmptest.AACTag(1, []byte{1, 2, 3}))
	c.B = append(c.B, 0xc0|3)
	c.B = append(c.B, cmd[128:]...)
	g := rtmpproto.NewGuard(bytes.NewReader(c.B[:len(c.B)-1]), rtmpproto.ServerLimits(1<<20)) // the last byte is missing
	got, err := io.ReadAll(g)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != headerEnd {
		t.Fatalf("delivered %d bytes of an incomplete command; want only the %d before its payload", len(got), headerEnd)
	}
	out, err := readGuarded(c.B, rtmpproto.ServerLimits(1<<20), 1)
	if err != nil || !bytes.Equal(out, c.B) {
		t.Fatalf("complete: %v, equal %v", err, bytes.Equal(out, c.B))
	}
}

func TestGuardViolations(t *testing.T) {
	lim := rtmpproto.ServerLimits(64 << 10)
	cases := []struct {
		name  string
		build func(c *rtmptest.Chunker)
	}{
		{"video message over max_message_size", func(c *rtmptest.Chunker) { c.Header(6, 0, 64<<10+1, rtmpproto.TypeVideo, 1) }},
		{"the largest length a header can declare (16 MiB)", func(c *rtmptest.Chunker) { c.Header(6, 0, 0xffffff, rtmpproto.TypeVideo, 1) }},
		{"command over 64 KiB", func(c *rtmptest.Chunker) { c.Header(3, 0, 64<<10+1, rtmpproto.TypeCommandAMF0, 0) }},
		{"empty message", func(c *rtmptest.Chunker) { c.Header(3, 0, 0, rtmpproto.TypeCommandAMF0, 0) }},
		{"too many chunk streams", func(c *rtmptest.Chunker) {
			for cs := 3; cs < 3+17; cs++ {
				c.Msg(cs, 0, rtmpproto.TypeAudio, 1, []byte{0xaf, 1, 0})
			}
		}},
		{"continuation of no message", func(c *rtmptest.Chunker) { c.B = append(c.B, 0xc0|9) }},
		{"new header inside a message", func(c *rtmptest.Chunker) {
			c.Header(6, 0, 1000, rtmpproto.TypeVideo, 1)
			c.B = append(c.B, make([]byte, 128)...)
			c.Header(6, 0, 10, rtmpproto.TypeVideo, 1)
		}},
		{"chunk size 0", func(c *rtmptest.Chunker) { c.SetChunkSize(0) }},
		{"chunk size below 128", func(c *rtmptest.Chunker) { c.SetChunkSize(16) }},
		{"chunk size with the reserved bit", func(c *rtmptest.Chunker) { c.SetChunkSize(0x80001000) }},
		{"window acknowledgement size 1", func(c *rtmptest.Chunker) { c.Msg(2, 0, rtmpproto.TypeWindowAckSize, 0, []byte{0, 0, 0, 1}) }},
		{"amf3 command", func(c *rtmptest.Chunker) { c.Msg(3, 0, rtmpproto.TypeCommandAMF3, 0, []byte{0, 2, 0, 1, 'x'}) }},
		{"aggregate message", func(c *rtmptest.Chunker) { c.Msg(6, 0, rtmpproto.TypeAggregate, 1, []byte{1}) }},
		{"unknown message type", func(c *rtmptest.Chunker) { c.Msg(6, 0, 99, 1, []byte{1}) }},
		{"strict array declaring 1 GiB of elements", func(c *rtmptest.Chunker) {
			c.Msg(3, 0, rtmpproto.TypeCommandAMF0, 0, append(rtmptest.AMF(nil).Str("connect").Num(1), rtmpproto.AMFStrictArray, 0x04, 0, 0, 0, rtmpproto.AMFNull))
		}},
		{"buffers of many chunk streams over the budget", func(c *rtmptest.Chunker) {
			for cs := 4; cs < 20; cs++ {
				c.Header(cs, 0, 64<<10, rtmpproto.TypeVideo, 1)
				c.B = append(c.B, make([]byte, 128)...)
			}
		}},
		{"not an rtmp client", func(c *rtmptest.Chunker) { c.B[0] = 'G' }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := rtmptest.NewChunker()
			tc.build(c)
			lim := lim
			lim.Budget = 5 * 64 << 10 // five full buffers
			for seed := range uint64(5) {
				out, err := readGuarded(c.B, lim, seed)
				if !errors.Is(err, rtmpproto.ErrProtocol) {
					t.Fatalf("seed %d: want a protocol violation, got %v after %d bytes", seed, err, len(out))
				}
				if len(out) >= len(c.B) {
					t.Fatalf("seed %d: the violating bytes were delivered", seed)
				}
			}
		})
	}
}

// FuzzChunkGuard checks the guard's invariants on arbitrary input after a valid handshake:
// no panic; what it delivers is a prefix of its input (it never invents or reorders bytes).
func FuzzChunkGuard(f *testing.F) {
	f.Add(rtmptest.Session(2, 300)[rtmpproto.HandshakeSize:])
	c := rtmptest.NewChunker()
	c.Header(6, 0, 0xffffff, rtmpproto.TypeVideo, 1)
	f.Add(c.B[rtmpproto.HandshakeSize:])
	f.Fuzz(func(t *testing.T, b []byte) {
		seed := uint64(len(b))
		in := append(rtmptest.Handshake(), b...)
		out, _ := readGuarded(in, rtmpproto.ServerLimits(64<<10), seed)
		if !bytes.HasPrefix(in, out) {
			t.Fatalf("the guard delivered bytes that are not a prefix of its input")
		}
	})
}

// BenchmarkChunkGuard measures the guard on a stream of 9 KB video and 300-byte audio
// messages in 4 KiB chunks, read in 4 KiB reads as go-rtmp's bufio does.
func BenchmarkChunkGuard(b *testing.B) {
	in := rtmptest.Session(300, 9000)
	buf := make([]byte, 4096)
	r := bytes.NewReader(nil)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.Reset(in)
		g := rtmpproto.NewGuard(r, rtmpproto.ServerLimits(8<<20))
		for {
			if _, err := g.Read(buf); err != nil {
				break
			}
		}
	}
}
