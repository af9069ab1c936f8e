package rtc

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// batchSize is the largest sendmmsg batch (messages per system call).
const batchSize = 64

// coalesce is how long the flusher lets packets gather after the first one is queued: a video
// frame reaches every viewer within it, so one system call carries many packets and each
// viewer's share of a frame can leave as one GSO datagram. It is the latency the queue adds.
const coalesce = 500 * time.Microsecond

// paceTick is how often the flusher releases what the pacer holds while it holds anything
// (pacer.go).
const paceTick = time.Millisecond

// UDP generic segmentation offload (Linux 4.18+): one datagram of up to maxSegments equal
// segments (the last may be shorter) that the kernel splits, so that the stack is walked once
// per run of packets to the same destination instead of once per packet.
const (
	solUDP      = 17  // SOL_UDP
	udpSegment  = 103 // UDP_SEGMENT
	maxSegments = 64
	maxGSOBytes = 65000
)

// maxPending bounds the packets waiting for the flusher; beyond it packets are dropped (and
// counted), as a full socket buffer would.
const maxPending = 8192

// maxControl is the room kept beyond maxPending for STUN and DTLS packets: when media fills
// the queue (an overloaded daemon), consent checks and a shed viewer's DTLS close_notify still
// leave, so that viewers are not timed out by ICE for lack of them.
const maxControl = 1024

// isMedia reports whether b is RTP or RTCP (RFC 7983 demultiplexing: first byte 128-191), as
// opposed to STUN (0-3) or DTLS (20-63).
func isMedia(b []byte) bool { return len(b) > 0 && b[0] >= 128 && b[0] <= 191 }

// batchConn is the UDP socket under the ICE mux. Reads go straight to the socket. Writes are
// copied into pooled buffers and queued; one flusher goroutine paces each destination's media
// (pacer.go) and sends what may leave with sendmmsg (one system call per up to 64 datagrams, to
// any mix of destinations), so the many subscription goroutines of a fan-out share system
// calls instead of making one each.
//
// It implements net.PacketConn and pion's ice.AddrPortReaderWriter. Close stops the flusher
// and waits for it.
type batchConn struct {
	conn *net.UDPConn
	w    batchWriter // owned by the flusher
	r    *rawReader

	mu      sync.Mutex
	pending []outPacket
	spare   []outPacket // the other buffer of the double-buffered queue
	free    [][]byte    // packet buffers
	closed  bool

	wake chan struct{}
	done chan struct{}

	sent, dropped, syscalls atomic.Uint64
	paced                   atomic.Int64 // packets the pacer holds, after the last flush

	gso atomic.Bool // the kernel takes UDP_SEGMENT on this socket

	// The flusher's: the pacer, the packets of one flush (released, and refused by a full
	// destination queue), the batch being sent and the packets each of its messages carries.
	pace     pacer
	ready    []outPacket
	rejected []outPacket
	msgs     []message
	counts   []int
}

type outPacket struct {
	buf  []byte
	addr netip.AddrPort
	at   int64 // when the pacer took it (pacer.go)
}

// message is one datagram of a batch: bufs sent to addr, as one segmented datagram of seg-byte
// segments when seg > 0 (GSO), else as one packet (bufs then holds one buffer).
type message struct {
	addr netip.AddrPort
	bufs [][]byte
	seg  uint16
}

// batchWriter sends a batch of messages in one system call where the system allows it, and
// returns how many the kernel took.
type batchWriter interface {
	writeBatch(ms []message) (int, error)
}

func newBatchConn(conn *net.UDPConn) (*batchConn, error) {
	_ = conn.SetWriteBuffer(4 << 20) // best effort: the kernel caps it
	_ = conn.SetReadBuffer(4 << 20)
	w, err := newBatchWriter(conn)
	if err != nil {
		return nil, err
	}
	r, err := newRawReader(conn)
	if err != nil {
		return nil, err
	}
	c := &batchConn{conn: conn, w: w, r: r, wake: make(chan struct{}, 1), done: make(chan struct{})}
	c.gso.Store(gsoSupported(conn))
	go c.flushLoop()
	return c, nil
}

// gsoSupported reports whether the socket accepts the UDP_SEGMENT option.
func gsoSupported(conn *net.UDPConn) bool {
	raw, err := conn.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		_, serr = syscall.GetsockoptInt(int(fd), solUDP, udpSegment)
	}); err != nil {
		return false
	}
	return serr == nil
}

// ReadFromAddrPort implements ice.AddrPortReaderWriter.
func (c *batchConn) ReadFromAddrPort(b []byte) (int, netip.AddrPort, error) {
	return c.r.readFrom(b)
}

// WriteToAddrPort queues b for addr and returns at once.
func (c *batchConn) WriteToAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	if len(c.pending) >= maxPending && (isMedia(b) || len(c.pending) >= maxPending+maxControl) {
		c.mu.Unlock()
		c.dropped.Add(1)
		return len(b), nil // a full socket buffer drops silently too
	}
	var buf []byte
	if n := len(c.free); n > 0 && cap(c.free[n-1]) >= len(b) {
		buf, c.free = c.free[n-1][:len(b)], c.free[:n-1]
	} else {
		buf = make([]byte, len(b), max(len(b), 1500))
	}
	copy(buf, b)
	c.pending = append(c.pending, outPacket{buf: buf, addr: addr})
	if len(c.pending) == 1 {
		select { // under the lock, so that Close cannot close wake in between
		case c.wake <- struct{}{}:
		default:
		}
	}
	c.mu.Unlock()
	return len(b), nil
}

func (c *batchConn) flushLoop() {
	defer close(c.done)
	c.msgs = make([]message, batchSize)
	for i := range c.msgs {
		c.msgs[i].bufs = make([][]byte, 0, maxSegments)
	}
	c.counts = make([]int, batchSize)
	epoch := time.Now()
	for {
		if c.pace.queued == 0 {
			if _, ok := <-c.wake; !ok {
				return
			}
			time.Sleep(coalesce)
		} else {
			time.Sleep(paceTick)
			select {
			case _, ok := <-c.wake:
				if !ok {
					return
				}
			default:
			}
		}
		c.mu.Lock()
		in := c.pending
		c.pending, c.spare = c.spare[:0], nil
		c.mu.Unlock()
		now := int64(time.Since(epoch))
		// STUN and DTLS leave at once; media waits for its destination's pace.
		ready, rejected := c.ready[:0], c.rejected[:0]
		for _, p := range in {
			switch {
			case !isMedia(p.buf):
				ready = append(ready, p)
			case !c.pace.add(p, now):
				rejected = append(rejected, p)
			}
		}
		c.dropped.Add(uint64(len(rejected)))
		ready = c.pace.release(now, ready)
		c.paced.Store(int64(c.pace.queued))
		c.send(ready)
		c.mu.Lock()
		for _, ps := range [][]outPacket{ready, rejected} {
			for i := range ps {
				c.free = append(c.free, ps[i].buf)
			}
		}
		clear(in)
		if c.spare == nil {
			c.spare = in[:0]
		}
		c.mu.Unlock()
		clear(ready)
		clear(rejected)
		c.ready, c.rejected = ready[:0], rejected[:0]
	}
}

// send writes packets in batches; a batch the kernel takes in part is resumed after it. Each
// destination's packets are together (the pacer releases them so), so that runs can be
// segmented.
func (c *batchConn) send(out []outPacket) {
	gso := c.gso.Load()
	for len(out) > 0 {
		n, total := c.fill(out, c.msgs, gso)
		wrote, err := c.w.writeBatch(c.msgs[:n])
		c.syscalls.Add(1)
		if wrote > 0 {
			k := 0
			for _, m := range c.counts[:wrote] {
				k += m
			}
			c.sent.Add(uint64(k))
			out = out[k:]
			continue
		}
		if err != nil && errors.Is(err, net.ErrClosed) {
			c.dropped.Add(uint64(len(out)))
			return
		}
		if gso && total > n && (errors.Is(err, syscall.EIO) || errors.Is(err, syscall.EINVAL)) {
			// The route's device cannot segment (no checksum offload): send plainly from now on.
			c.gso.Store(false)
			gso = false
			continue
		}
		// The socket buffer is full or the first destination failed (e.g. unreachable):
		// drop that message and go on, as a plain write would have failed it.
		c.dropped.Add(uint64(c.counts[0]))
		out = out[c.counts[0]:]
		if err != nil {
			time.Sleep(50 * time.Microsecond)
		}
	}
}

// fill builds up to batchSize messages from the head of out: with gso, each a run of packets
// to one destination of one size (the last may be shorter) as one segmented datagram. It
// returns the messages and the packets they carry; c.counts holds each message's share.
func (c *batchConn) fill(out []outPacket, msgs []message, gso bool) (n, total int) {
	for n < batchSize && total < len(out) {
		first := out[total]
		m := &msgs[n]
		m.bufs = append(m.bufs[:0], first.buf)
		m.addr, m.seg = first.addr, 0
		k, size, bytes := 1, len(first.buf), len(first.buf)
		if gso {
			for total+k < len(out) && k < maxSegments {
				p := out[total+k]
				if p.addr != first.addr || len(p.buf) > size || bytes+len(p.buf) > maxGSOBytes {
					break
				}
				m.bufs = append(m.bufs, p.buf)
				bytes += len(p.buf)
				k++
				if len(p.buf) < size {
					break // a shorter segment ends the datagram
				}
			}
			if k > 1 {
				m.seg = uint16(size) //nolint:gosec // size ≤ 1500
			}
		}
		c.counts[n] = k
		total += k
		n++
	}
	return n, total
}

// ReadFrom implements net.PacketConn.
func (c *batchConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := c.r.readFrom(b)
	if err != nil {
		return n, nil, err
	}
	return n, net.UDPAddrFromAddrPort(addr), nil
}

// WriteTo implements net.PacketConn through the queue.
func (c *batchConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return c.conn.WriteTo(b, addr)
	}
	return c.WriteToAddrPort(b, ua.AddrPort())
}

// Close closes the socket and stops the flusher.
func (c *batchConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	err := c.conn.Close()
	close(c.wake)
	<-c.done
	return err
}

// LocalAddr implements net.PacketConn.
func (c *batchConn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// localAddrPort is the socket's bound address.
func (c *batchConn) localAddrPort() netip.AddrPort {
	if a, ok := c.conn.LocalAddr().(*net.UDPAddr); ok {
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// SetDeadline implements net.PacketConn (reads only: writes never block).
func (c *batchConn) SetDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// SetReadDeadline implements net.PacketConn.
func (c *batchConn) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// SetWriteDeadline implements net.PacketConn; writes are queued and never block.
func (c *batchConn) SetWriteDeadline(time.Time) error { return nil }
