package rtsp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
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
			c := newBatchConn(rc)
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
	c := newBatchConn(rc)
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
			c := newBatchConn(nc)
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

// tcpPair returns both ends of a loopback TCP connection, the accepted one wrapped as the
// server wraps it.
func tcpPair(t *testing.T) (client net.Conn, server *batchConn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	c, err := batchListener{l}.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return client, c.(*batchConn)
}

// A publisher's stream comes out of the read side whole, in order and read as gortsplib
// reads it (4 KiB at a time, then whole payloads); the first full read gives the connection
// its large buffer, which a player's small requests never do. The end, deadlines and Close
// read as net.Conn's do.
func TestBatchConnRead(t *testing.T) {
	t.Run("publisher", func(t *testing.T) {
		client, c := tcpPair(t)
		var sent bytes.Buffer
		for i := range 400 {
			size := []int{1100, 12, 180, maxHeld, 1400, 3}[i%6]
			sent.Write(interleaved(uint8(i%4), 96, i%3 == 0, uint32(i), size))
		}
		want := sent.Bytes()
		go func() {
			for b := want; len(b) > 0; { // in uneven pieces, as a sender's packets arrive
				n := min(len(b), 777+len(b)%5000)
				if _, err := client.Write(b[:n]); err != nil {
					return
				}
				b = b[n:]
			}
			client.Close()
		}()
		br := bufio.NewReaderSize(c, 4096)
		var got []byte
		for {
			var hdr [4]byte
			if _, err := io.ReadFull(br, hdr[:]); err != nil {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("reading a header: %v", err)
				}
				break
			}
			payload := make([]byte, int(hdr[2])<<8|int(hdr[3]))
			if _, err := io.ReadFull(br, payload); err != nil {
				t.Fatalf("reading a payload: %v", err)
			}
			got = append(append(got, hdr[:]...), payload...)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("read %d bytes, not the %d sent", len(got), len(want))
		}
		if len(c.rbuf) != readBufSize {
			t.Errorf("a publisher's connection reads through %d bytes, want %d", len(c.rbuf), readBufSize)
		}
	})
	t.Run("player", func(t *testing.T) {
		client, c := tcpPair(t)
		msgs := [][]byte{[]byte("OPTIONS rtsp://127.0.0.1/room RTSP/1.0\r\nCSeq: 9\r\n\r\n"), interleaved(1, 201, false, 0, 20)}
		for _, m := range msgs {
			if _, err := client.Write(m); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(m))
			if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, m) {
				t.Fatalf("read %q, %v; want %q", got, err, m)
			}
		}
		if c.rbuf != nil {
			t.Errorf("a player's connection got a read buffer of %d bytes", len(c.rbuf))
		}
	})
	t.Run("deadline and close", func(t *testing.T) {
		_, c := tcpPair(t)
		if err := c.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
		var ne net.Error
		if _, err := c.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("read past the deadline: %v, want a timeout", err)
		}
		c.Close()
		if _, err := c.Read(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read after Close: %v, want net.ErrClosed", err)
		}
	})
	t.Run("no allocation per read", func(t *testing.T) {
		client, c := tcpPair(t)
		chunk := make([]byte, 4096)
		if _, err := client.Write(bytes.Repeat(chunk, 200)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, chunk); err != nil { // the first full read: the buffer
			t.Fatal(err)
		}
		if a := testing.AllocsPerRun(100, func() {
			if _, err := io.ReadFull(c, chunk); err != nil {
				t.Fatal(err)
			}
		}); a != 0 {
			t.Errorf("%.1f allocations per read", a)
		}
	})
}
