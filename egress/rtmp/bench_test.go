package rtmp

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu/rtmpproto"
)

// BenchmarkWriteVideo measures a video message through the chunk writer and the socket (a
// loopback TCP connection whose other end discards): one 6 kB P-frame per op.
func BenchmarkWriteVideo(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		c, err := l.Accept()
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, c)
		_ = c.Close()
	}()
	nc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	c := &Conn{nc: nc, outChunk: outChunkSize, live: true, streamID: 1, done: make(chan struct{}),
		opts: Options{WriteTimeout: 10 * time.Second}}
	head := rtmpproto.AVCFrameHeader(false, 0)
	avcc := append([]byte{0, 0, 0x17, 0x70}, make([]byte, 6000)...) // as the broadcaster writes a frame
	b.SetBytes(int64(len(head) + len(avcc)))
	b.ReportAllocs()
	ts := uint32(0)
	for b.Loop() {
		if err := c.WriteVideo(ts, head[:], avcc); err != nil {
			b.Fatal(err)
		}
		ts += 33
	}
	_ = nc.Close()
	<-drained
}
