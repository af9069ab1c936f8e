//go:build !linux

package rtc

import (
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// xnetWriter sends a batch through x/net, which loops over plain writes where the system has no
// sendmmsg. Segmentation offload is Linux's: gsoSupported is false here, so seg is always 0.
type xnetWriter struct {
	batch interface {
		WriteBatch(ms []ipv4.Message, flags int) (int, error)
	}
	msgs []ipv4.Message
}

func newBatchWriter(conn *net.UDPConn) (batchWriter, error) {
	w := &xnetWriter{msgs: make([]ipv4.Message, batchSize)}
	if la, ok := conn.LocalAddr().(*net.UDPAddr); ok && la.IP.To4() == nil {
		w.batch = ipv6.NewPacketConn(conn)
	} else {
		w.batch = ipv4.NewPacketConn(conn)
	}
	return w, nil
}

func (w *xnetWriter) writeBatch(ms []message) (int, error) {
	for i := range ms {
		w.msgs[i] = ipv4.Message{Buffers: ms[i].bufs, Addr: net.UDPAddrFromAddrPort(ms[i].addr)}
	}
	return w.batch.WriteBatch(w.msgs[:len(ms)], 0)
}

// rawReader is a plain read where the system is not Linux.
type rawReader struct{ conn *net.UDPConn }

func newRawReader(conn *net.UDPConn) (*rawReader, error) { return &rawReader{conn: conn}, nil }

func (r *rawReader) readFrom(b []byte) (int, netip.AddrPort, error) {
	return r.conn.ReadFromUDPAddrPort(b)
}
