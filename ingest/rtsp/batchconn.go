package rtsp

import (
	"io"
	"net"
	"sync"
)

// maxHeld bounds the bytes a batchConn holds back: a large keyframe goes out in pieces of
// about this size.
const maxHeld = 32 << 10

// batchListener hands gortsplib batchConns, so that a TCP player's video can be written a
// frame at a time. Its methods are those of the wrapped listener.
type batchListener struct{ net.Listener }

// Accept wraps the next connection.
func (l batchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newBatchConn(c), nil
}

// newBatchConn wraps c, reading it raw where it is a socket of this system.
func newBatchConn(c net.Conn) *batchConn {
	bc := &batchConn{Conn: c, r: c}
	if r := newRawTCPReader(c); r != nil {
		bc.r = r
	}
	return bc
}

// readBufSize is the read buffer of a connection that sends media (a publisher): a video
// frame or more per system call.
const readBufSize = 64 << 10

// fullReadBuffers is the read size whose filling tells a connection that sends media: gortsplib
// reads through a buffer of 4 KiB, and a player's requests and receiver reports never fill it.
const fullReadBuffers = 4 << 10

// maxHeldAudio bounds the audio packets held back for the next video write: at 30 fps a video
// frame ends every 33 ms, and when the video pauses audio goes out every 60 ms (20 ms frames).
const maxHeldAudio = 3

// batchConn is an RTSP server connection that writes the interleaved RTP packets of one video
// frame (RFC 2326 §10.12 framing), with the audio that came meanwhile, in one system call
// instead of one per packet, which is most of what a TCP reader costs the daemon. Until a
// player marks payload types (hold) it is a plain connection.
//
// A video packet is kept until the packet that ends its access unit (RTP marker bit, RFC 6184
// §5.1), a packet with another timestamp (a source that sets no marker), or maxHeld bytes; an
// audio packet until the next video write or maxHeldAudio packets; anything else (RTCP, a
// response) carries the held packets out with it, in order. gortsplib writes each frame whole
// in one Write, from the session's writer goroutine and the connection's goroutine: Write is
// safe for concurrent use and allocates nothing once its buffer has grown to a frame. A write
// error is returned by the Write that flushes, and by every later one.
type batchConn struct {
	net.Conn

	mu        sync.Mutex
	video     [2]uint64 // bit sets of payload types (0-127)
	audio     [2]uint64
	holding   bool
	held      []byte
	heldVideo bool
	heldTS    uint32
	heldAudio int
	err       error

	// The read side: the connection reader's goroutine only.
	r          io.Reader // the raw reader, or the connection
	rbuf       []byte    // nil until a read fills a buffer of fullReadBuffers
	rpos, rend int
}

// Read implements net.Conn for one reading goroutine. gortsplib reads 4 KiB at a time, which a
// publisher's video frame takes several system calls to satisfy; once a read fills such a
// buffer, the connection reads through one of readBufSize, so that what the socket holds comes
// out in one call.
func (c *batchConn) Read(p []byte) (int, error) {
	if c.rpos < c.rend {
		n := copy(p, c.rbuf[c.rpos:c.rend])
		c.rpos += n
		return n, nil
	}
	if c.rbuf == nil || len(p) >= len(c.rbuf) {
		n, err := c.r.Read(p)
		if c.rbuf == nil && n == len(p) && n >= fullReadBuffers {
			c.rbuf = make([]byte, readBufSize)
		}
		return n, err
	}
	n, err := c.r.Read(c.rbuf)
	if n <= 0 {
		return 0, err
	}
	c.rpos, c.rend = copy(p, c.rbuf[:n]), n
	return c.rpos, err
}

// frameKind is what a write carries.
type frameKind int

const (
	frameOther frameKind = iota
	frameVideo
	frameAudio
)

// hold marks a payload type as video (written a frame at a time) or audio (written with the
// video).
func (c *batchConn) hold(pt uint8, video bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pt &= 0x7f
	if video {
		c.video[pt/64] |= 1 << (pt % 64)
	} else {
		c.audio[pt/64] |= 1 << (pt % 64)
	}
	c.holding = true
}

// Write implements net.Conn.
func (c *batchConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if !c.holding {
		return c.Conn.Write(b)
	}
	kind, ts, marker := c.classify(b)
	switch kind {
	case frameOther:
		if len(c.held) == 0 {
			return c.write(b)
		}
		c.held = append(c.held, b...)
		return c.flush(len(b))
	case frameAudio:
		c.held = append(c.held, b...)
		if c.heldAudio++; c.heldAudio >= maxHeldAudio {
			return c.flush(len(b))
		}
		return len(b), nil
	case frameVideo:
	}
	if c.heldVideo && ts != c.heldTS {
		if _, err := c.flush(0); err != nil {
			return 0, err
		}
	}
	c.held = append(c.held, b...)
	c.heldVideo, c.heldTS = true, ts
	if marker || len(c.held) >= maxHeld {
		return c.flush(len(b))
	}
	return len(b), nil
}

// classify reads the RTP header of an interleaved frame written whole: whether its payload
// type is held as video or audio, its timestamp and its marker bit.
func (c *batchConn) classify(b []byte) (kind frameKind, ts uint32, marker bool) {
	if len(b) < 4+12 || b[0] != '$' || int(b[2])<<8|int(b[3]) != len(b)-4 || b[4]>>6 != 2 {
		return frameOther, 0, false
	}
	if b[5] >= 200 && b[5] <= 204 { // RTCP SR, RR, SDES, BYE, APP (RFC 5761 §4)
		return frameOther, 0, false
	}
	pt := b[5] & 0x7f
	switch bit := uint64(1) << (pt % 64); {
	case c.video[pt/64]&bit != 0:
		kind = frameVideo
	case c.audio[pt/64]&bit != 0:
		kind = frameAudio
	default:
		return frameOther, 0, false
	}
	return kind, uint32(b[8])<<24 | uint32(b[9])<<16 | uint32(b[10])<<8 | uint32(b[11]), b[5]&0x80 != 0
}

// flush writes the held bytes and reports n written when it succeeds.
func (c *batchConn) flush(n int) (int, error) {
	_, err := c.write(c.held)
	c.held, c.heldVideo, c.heldAudio = c.held[:0], false, 0
	if err != nil {
		return 0, err
	}
	return n, nil
}

func (c *batchConn) write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err != nil {
		c.err = err
	}
	return n, err
}
