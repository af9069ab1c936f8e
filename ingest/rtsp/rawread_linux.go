//go:build linux

package rtsp

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sluice-media/sluice/sfu/rawio"
)

// rawTCPReader reads a TCP connection with raw read(2) calls (package rawio says why): a
// publisher's packets, arriving a frame at a time, kept the scheduler's monitor awake. One
// goroutine reads at a time (gortsplib's connection reader).
type rawTCPReader struct {
	conn  net.Conn
	raw   syscall.RawConn
	read  func(fd uintptr) bool
	buf   []byte
	n     int
	errno syscall.Errno
}

// newRawTCPReader returns nil for a connection that is not a socket of this system.
func newRawTCPReader(conn net.Conn) *rawTCPReader {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawTCPReader{conn: conn, raw: raw}
	r.read = r.readFD // made once: a closure per read would be an allocation per read
	return r
}

// Read reads as net.Conn's Read does: io.EOF at the end, errors as *net.OpError.
func (r *rawTCPReader) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	r.n, r.errno, r.buf = 0, 0, b
	err := r.raw.Read(r.read)
	r.buf = nil
	if err == nil && r.errno != 0 {
		err = os.NewSyscallError("read", r.errno)
	}
	if err != nil {
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: r.conn.LocalAddr(), Addr: r.conn.RemoteAddr(), Err: err}
	}
	if r.n == 0 {
		return 0, io.EOF
	}
	return r.n, nil
}

// readFD is the read callback: what the socket holds, up to len(r.buf).
func (r *rawTCPReader) readFD(fd uintptr) bool {
	n, e, ok := rawio.Call(unix.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(r.buf))), uintptr(len(r.buf)), 0, 0, 0) //nolint:gosec // G103: read(2) into the caller's buffer
	if !ok {
		return false // wait until readable
	}
	r.n, r.errno = int(n), e
	return true
}
