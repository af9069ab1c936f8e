package rtsp

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
)

// recordConn records each Write as one system call would see it.
type recordConn struct {
	net.Conn
	writes [][]byte
	err    error
}

func (c *recordConn) Write(b []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	c.writes = append(c.writes, append([]byte(nil), b...))
	return len(b), nil
}

// interleaved is an interleaved RTP packet (RFC 2326 §10.12) of payload type pt.
func interleaved(ch, pt uint8, marker bool, ts uint32, payload int) []byte {
	b := make([]byte, 4+12+payload)
	b[0], b[1] = '$', ch
	b[2], b[3] = byte((12+payload)>>8), byte(12+payload)
	b[4] = 0x80
	b[5] = pt
	if marker {
		b[5] |= 0x80
	}
	b[8], b[9], b[10], b[11] = byte(ts>>24), byte(ts>>16), byte(ts>>8), byte(ts)
	return b
}

func TestBatchConn(t *testing.T) {
	v := func(marker bool, ts uint32) []byte { return interleaved(0, 96, marker, ts, 1000) }
	audio := interleaved(2, 111, false, 5, 100)
	sr := interleaved(1, 200, false, 0, 16) // an RTCP sender report: 200 is SR's packet type
	other := interleaved(4, 0, false, 5, 160)
	response := []byte("RTSP/1.0 200 OK\r\nCSeq: 5\r\n\r\n")
	big := func(marker bool) []byte { return interleaved(0, 96, marker, 1, maxHeld/3) }
	cases := []struct {
		name  string
		hold  bool
		in    [][]byte
		calls [][]int // the inputs each system call carries
	}{
		{"plain until a player holds", false, [][]byte{v(false, 1), v(true, 1), audio}, [][]int{{0}, {1}, {2}}},
		{"a frame in one write", true, [][]byte{v(false, 1), v(false, 1), v(true, 1), v(true, 2)}, [][]int{{0, 1, 2}, {3}}},
		{"audio goes with the video frame", true, [][]byte{audio, v(false, 1), audio, v(true, 1)}, [][]int{{0, 1, 2, 3}}},
		{"audio alone, three at a time", true, [][]byte{audio, audio, audio, audio, sr}, [][]int{{0, 1, 2}, {3, 4}}},
		{"a new timestamp ends a frame without a marker", true, [][]byte{v(false, 1), v(false, 1), v(false, 2), v(true, 2)}, [][]int{{0, 1}, {2, 3}}},
		{"rtcp and responses flush", true, [][]byte{v(false, 1), sr, v(false, 2), response}, [][]int{{0, 1}, {2, 3}}},
		{"other payload types flush", true, [][]byte{v(false, 1), other, other}, [][]int{{0, 1}, {2}}},
		{"bounded", true, [][]byte{big(false), big(false), big(false), big(true)}, [][]int{{0, 1, 2}, {3}}},
		{"a truncated frame is not held", true, [][]byte{v(false, 1)[:20]}, [][]int{{0}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc := &recordConn{}
			c := &batchConn{Conn: rc}
			if tc.hold {
				c.hold(96, true)
				c.hold(111, false)
			}
			for _, b := range tc.in {
				if n, err := c.Write(b); n != len(b) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if len(rc.writes) != len(tc.calls) {
				t.Fatalf("%d writes, want %d", len(rc.writes), len(tc.calls))
			}
			for i, call := range tc.calls {
				var want []byte
				for _, j := range call {
					want = append(want, tc.in[j]...)
				}
				if !bytes.Equal(rc.writes[i], want) {
					t.Errorf("write %d carries %d bytes, want inputs %v (%d bytes)", i, len(rc.writes[i]), call, len(want))
				}
			}
		})
	}
}

// A failed write fails the Write that flushed and every later one; held packets are not
// reported written.
func TestBatchConnError(t *testing.T) {
	boom := errors.New("boom")
	rc := &recordConn{}
	c := &batchConn{Conn: rc}
	c.hold(96, true)
	if _, err := c.Write(interleaved(0, 96, false, 1, 10)); err != nil {
		t.Fatal(err)
	}
	rc.err = boom
	if n, err := c.Write(interleaved(0, 96, true, 1, 10)); n != 0 || !errors.Is(err, boom) {
		t.Fatalf("flushing Write = %d, %v", n, err)
	}
	rc.err = nil
	if _, err := c.Write([]byte("RTSP/1.0 200 OK\r\n\r\n")); !errors.Is(err, boom) {
		t.Fatalf("later Write = %v, want the first error", err)
	}
}

// BenchmarkBatchConn writes one 720p30 video frame (11 packets of 1,150 bytes) and an audio
// packet to a loopback TCP connection, as gortsplib's writer does for one TCP player: per
// packet (direct) or a frame and its audio at a time (batched).
func BenchmarkBatchConn(b *testing.B) {
	for _, batched := range []bool{false, true} {
		name := "direct"
		if batched {
			name = "batched"
		}
		b.Run(name, func(b *testing.B) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := l.Accept()
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, c)
				c.Close()
			}()
			nc, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			c := &batchConn{Conn: nc}
			if batched {
				c.hold(96, true)
				c.hold(111, false)
			}
			var pkts [][]byte
			for i := range 11 {
				pkts = append(pkts, interleaved(0, 96, i == 10, 1, 1150))
			}
			pkts = append(pkts, interleaved(2, 111, false, 1, 120))
			b.SetBytes(int64(11*(16+1150) + 16 + 120))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				for _, p := range pkts {
					if _, err := c.Write(p); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.StopTimer()
			nc.Close()
			wg.Wait()
		})
	}
}
