package rtmp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// chunker writes RTMP chunks (RTMP spec §5.3.1): a type 0 header, then type 3 continuations.
type chunker struct {
	b         []byte
	chunkSize int
}

func basicHeader(f byte, csid int) []byte {
	switch {
	case csid < 64:
		return []byte{f<<6 | byte(csid)}
	case csid < 320:
		return []byte{f << 6, byte(csid - 64)}
	default:
		return []byte{f<<6 | 1, byte((csid - 64) % 256), byte((csid - 64) / 256)}
	}
}

// header appends a type 0 header declaring length (which may differ from the payload sent).
func (c *chunker) header(csid int, ts uint32, length int, typ byte, streamID uint32) {
	c.b = append(c.b, basicHeader(0, csid)...)
	ext := ts >= 0xffffff
	t24 := ts
	if ext {
		t24 = 0xffffff
	}
	c.b = append(c.b, byte(t24>>16), byte(t24>>8), byte(t24), byte(length>>16), byte(length>>8), byte(length), typ)
	c.b = binary.LittleEndian.AppendUint32(c.b, streamID)
	if ext {
		c.b = binary.BigEndian.AppendUint32(c.b, ts)
	}
}

// msg appends one message, split into chunks of c.chunkSize.
func (c *chunker) msg(csid int, ts uint32, typ byte, streamID uint32, payload []byte) {
	c.header(csid, ts, len(payload), typ, streamID)
	for i := 0; ; {
		n := min(c.chunkSize, len(payload)-i)
		c.b = append(c.b, payload[i:i+n]...)
		i += n
		if i == len(payload) {
			return
		}
		c.b = append(c.b, basicHeader(3, csid)...)
	}
}

func (c *chunker) setChunkSize(n uint32) {
	c.msg(2, 0, msgSetChunkSize, 0, binary.BigEndian.AppendUint32(nil, n))
	c.chunkSize = int(min(n&0x7fffffff, maxChunkSizeValue))
}

func handshakeBytes() []byte {
	b := make([]byte, handshakeSize)
	b[0] = rtmpVersion
	return b
}

func newChunker() *chunker { return &chunker{b: handshakeBytes(), chunkSize: 128} }

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
func readGuarded(in []byte, lim limits, seed uint64) ([]byte, error) {
	g := newChunkGuard(&trickle{b: in, rnd: rand.New(rand.NewPCG(seed, 1))}, lim)
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

func connectCommand() amf {
	b := amf(nil).str("connect").num(1)
	b = append(b, amfObject)
	return b.key("app").str("live").key("type").str("nonprivate").key("tcUrl").str("rtmp://127.0.0.1/live").end()
}

// validSession is what OBS sends: connect, a larger chunk size, createStream, publish, then
// metadata, audio and video interleaved on their chunk streams.
func validSession() []byte { return sessionBytes(10, 9000) }

// sessionBytes is validSession with n video frames of size bytes.
func sessionBytes(n, size int) []byte {
	c := newChunker()
	c.setChunkSize(4096)
	c.msg(3, 0, msgCommandAMF0, 0, connectCommand())
	c.msg(3, 0, msgCommandAMF0, 0, append(amf(nil).str("createStream").num(2), amfNull))
	c.msg(3, 0, msgCommandAMF0, 0, append(amf(nil).str("publish").num(3), append([]byte{amfNull}, amf(nil).str("room").str("live")...)...))
	c.msg(4, 0, msgDataAMF0, 1, amf(nil).str("@setDataFrame").str("onMetaData"))
	c.msg(6, 0, msgVideo, 1, avcTag(true, 0, 0, avcConfigRecord(testSPS, testPPS)))
	c.msg(4, 0, msgAudio, 1, aacTag(0, testASC))
	for i := range n {
		c.msg(6, uint32(i*33), msgVideo, 1, avcTag(i == 0, 1, 66, lengthPrefixed(fakeIDR(size))))
		c.msg(4, uint32(i*21), msgAudio, 1, aacTag(1, make([]byte, 300)))
	}
	return c.b
}

func TestGuardPassesAValidSession(t *testing.T) {
	in := validSession()
	for seed := range uint64(20) {
		out, err := readGuarded(in, newLimits(1<<20), seed)
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
	c := newChunker()
	cmd := connectCommand().str(string(bytes.Repeat([]byte("x"), 100)))
	c.header(3, 0, len(cmd), msgCommandAMF0, 0)
	headerEnd := len(c.b) // handshake + header of the command
	c.b = append(c.b, cmd[:128]...)
	c.msg(4, 0, msgAudio, 1, aacTag(1, []byte{1, 2, 3}))
	c.b = append(c.b, basicHeader(3, 3)...)
	c.b = append(c.b, cmd[128:]...)
	g := newChunkGuard(bytes.NewReader(c.b[:len(c.b)-1]), newLimits(1<<20)) // the last byte is missing
	got, err := io.ReadAll(g)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != headerEnd {
		t.Fatalf("delivered %d bytes of an incomplete command; want only the %d before its payload", len(got), headerEnd)
	}
	out, err := readGuarded(c.b, newLimits(1<<20), 1)
	if err != nil || !bytes.Equal(out, c.b) {
		t.Fatalf("complete: %v, equal %v", err, bytes.Equal(out, c.b))
	}
}

func TestGuardViolations(t *testing.T) {
	lim := newLimits(64 << 10)
	cases := []struct {
		name  string
		build func(c *chunker)
	}{
		{"video message over max_message_size", func(c *chunker) { c.header(6, 0, 64<<10+1, msgVideo, 1) }},
		{"the largest length a header can declare (16 MiB)", func(c *chunker) { c.header(6, 0, 0xffffff, msgVideo, 1) }},
		{"command over 64 KiB", func(c *chunker) { c.header(3, 0, 64<<10+1, msgCommandAMF0, 0) }},
		{"empty message", func(c *chunker) { c.header(3, 0, 0, msgCommandAMF0, 0) }},
		{"too many chunk streams", func(c *chunker) {
			for cs := 3; cs < 3+17; cs++ {
				c.msg(cs, 0, msgAudio, 1, []byte{0xaf, 1, 0})
			}
		}},
		{"continuation of no message", func(c *chunker) { c.b = append(c.b, basicHeader(3, 9)...) }},
		{"new header inside a message", func(c *chunker) {
			c.header(6, 0, 1000, msgVideo, 1)
			c.b = append(c.b, make([]byte, 128)...)
			c.header(6, 0, 10, msgVideo, 1)
		}},
		{"chunk size 0", func(c *chunker) { c.setChunkSize(0) }},
		{"chunk size below 128", func(c *chunker) { c.setChunkSize(16) }},
		{"chunk size with the reserved bit", func(c *chunker) { c.setChunkSize(0x80001000) }},
		{"window acknowledgement size 1", func(c *chunker) { c.msg(2, 0, msgWindowAckSize, 0, []byte{0, 0, 0, 1}) }},
		{"amf3 command", func(c *chunker) { c.msg(3, 0, msgCommandAMF3, 0, []byte{0, 2, 0, 1, 'x'}) }},
		{"aggregate message", func(c *chunker) { c.msg(6, 0, msgAggregate, 1, []byte{1}) }},
		{"unknown message type", func(c *chunker) { c.msg(6, 0, 99, 1, []byte{1}) }},
		{"strict array declaring 1 GiB of elements", func(c *chunker) {
			c.msg(3, 0, msgCommandAMF0, 0, append(amf(nil).str("connect").num(1), amfStrictArray, 0x04, 0, 0, 0, amfNull))
		}},
		{"buffers of many chunk streams over the budget", func(c *chunker) {
			for cs := 4; cs < 20; cs++ {
				c.header(cs, 0, 64<<10, msgVideo, 1)
				c.b = append(c.b, make([]byte, 128)...)
			}
		}},
		{"not an rtmp client", func(c *chunker) { c.b[0] = 'G' }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newChunker()
			tc.build(c)
			lim := lim
			lim.budget = 5 * 64 << 10 // five full buffers
			for seed := range uint64(5) {
				out, err := readGuarded(c.b, lim, seed)
				if !errors.Is(err, errProtocol) {
					t.Fatalf("seed %d: want a protocol violation, got %v after %d bytes", seed, err, len(out))
				}
				if len(out) >= len(c.b) {
					t.Fatalf("seed %d: the violating bytes were delivered", seed)
				}
			}
		})
	}
}

// FuzzChunkGuard checks the guard's invariants on arbitrary input after a valid handshake:
// no panic; what it delivers is a prefix of its input (it never invents or reorders bytes).
func FuzzChunkGuard(f *testing.F) {
	f.Add(sessionBytes(2, 300)[handshakeSize:])
	c := newChunker()
	c.header(6, 0, 0xffffff, msgVideo, 1)
	f.Add(c.b[handshakeSize:])
	f.Fuzz(func(t *testing.T, b []byte) {
		seed := uint64(len(b))
		in := append(handshakeBytes(), b...)
		out, _ := readGuarded(in, newLimits(64<<10), seed)
		if !bytes.HasPrefix(in, out) {
			t.Fatalf("the guard delivered bytes that are not a prefix of its input")
		}
	})
}
