//go:build linux

package rtc

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sluice-media/sluice/sfu/rawio"
)

// mmsghdr is struct mmsghdr of sendmmsg(2).
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

// mmsgWriter sends a batch of datagrams with one sendmmsg(2). The headers, address and iovec
// arrays are built in place each time, so a batch allocates nothing.
//
// The system call is made raw (without telling the Go scheduler): a non-blocking UDP send never
// sleeps, and a full batch takes long enough that the runtime's monitor would take the P away
// from the flusher at every call, hand it to another thread and keep itself awake at its
// fastest rate, costing more CPU in context switches than the sends (BenchmarkBatchConn). EAGAIN
// still parks the flusher in the poller.
type mmsgWriter struct {
	raw   syscall.RawConn
	v6    bool
	hdrs  [batchSize]mmsghdr
	iovs  [batchSize * maxSegments]unix.Iovec
	names [batchSize]unix.RawSockaddrInet6 // or RawSockaddrInet4 in its first bytes
	oob   [batchSize][32]byte
}

func newBatchWriter(conn *net.UDPConn) (batchWriter, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	// The socket's own family: a wildcard listen may be a dual-stack IPv6 socket.
	domain, serr := 0, error(nil)
	if err := raw.Control(func(fd uintptr) {
		domain, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, os.NewSyscallError("getsockopt SO_DOMAIN", serr)
	}
	return &mmsgWriter{raw: raw, v6: domain == unix.AF_INET6}, nil
}

func (w *mmsgWriter) writeBatch(ms []message) (int, error) {
	for i := range ms {
		m := &ms[i]
		h := &w.hdrs[i]
		h.hdr = unix.Msghdr{}
		iov := w.iovs[i*maxSegments : i*maxSegments+len(m.bufs)]
		for j, b := range m.bufs {
			iov[j].Base = unsafe.SliceData(b) //nolint:gosec // G103: kernel ABI structures of sendmmsg(2)/recvfrom(2)
			iov[j].SetLen(len(b))
		}
		h.hdr.Iov = &iov[0]
		h.hdr.SetIovlen(len(iov))
		h.hdr.Name, h.hdr.Namelen = w.sockaddr(i, m.addr)
		if m.seg > 0 {
			c := w.oob[i][:unix.CmsgSpace(2)]
			clear(c)
			ch := (*unix.Cmsghdr)(unsafe.Pointer(&c[0])) //nolint:gosec // the kernel ABI's header, inside c
			ch.Level, ch.Type = solUDP, udpSegment
			ch.SetLen(unix.CmsgLen(2))
			binary.NativeEndian.PutUint16(c[unix.CmsgLen(0):], m.seg)
			h.hdr.Control = &c[0]
			h.hdr.SetControllen(len(c))
		}
	}
	var sent int
	var errno syscall.Errno
	err := w.raw.Write(func(fd uintptr) bool {
		r, e, ok := rawio.Call(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&w.hdrs[0])), uintptr(len(ms)), 0, 0, 0) //nolint:gosec // G103: kernel ABI structures of sendmmsg(2)/recvfrom(2)
		if !ok {
			return false // wait until the socket is writable
		}
		if e == 0 {
			sent = int(r)
		}
		errno = e
		return true
	})
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, os.NewSyscallError("sendmmsg", errno)
	}
	return sent, nil
}

// sockaddr writes addr into slot i as the socket's family wants it.
func (w *mmsgWriter) sockaddr(i int, addr netip.AddrPort) (*byte, uint32) {
	sa := &w.names[i]
	port := addr.Port()
	if w.v6 {
		*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: addr.Addr().As16()}
		sa.Port = htons(port)
		return (*byte)(unsafe.Pointer(sa)), unix.SizeofSockaddrInet6 //nolint:gosec // G103: kernel ABI structures of sendmmsg(2)/recvfrom(2)
	}
	s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa)) //nolint:gosec // G103: kernel ABI structures of sendmmsg(2)/recvfrom(2)
	*s4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: addr.Addr().Unmap().As4()}
	s4.Port = htons(port)
	return (*byte)(unsafe.Pointer(s4)), unix.SizeofSockaddrInet4 //nolint:gosec // G103: kernel ABI structures of sendmmsg(2)/recvfrom(2)
}

// htons turns a port into the network byte order of a sockaddr's port field, and back.
func htons(port uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], port)
	return binary.NativeEndian.Uint16(b[:])
}

// rawReader receives datagrams with raw recvfrom(2) calls, for the reason mmsgWriter sends raw:
// every system call entered through the scheduler wakes its monitor when the process was idle,
// which then polls at its fastest rate for a millisecond; a media socket receiving a packet
// every few hundred microseconds kept it doing that for ever. EAGAIN parks in the poller, and
// read deadlines hold as for any read.
type rawReader struct {
	raw syscall.RawConn

	mu    sync.Mutex // one reader at a time owns buf, sa, salen and the results
	recv  func(fd uintptr) bool
	buf   []byte
	sa    unix.RawSockaddrInet6
	salen uint32
	n     int
	errno syscall.Errno
	zones map[uint32]string
}

func newRawReader(conn *net.UDPConn) (*rawReader, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &rawReader{raw: raw}
	r.recv = r.recvfrom // made once: a closure per read would be an allocation per packet
	return r, nil
}

func (r *rawReader) readFrom(b []byte) (int, netip.AddrPort, error) {
	if len(b) == 0 {
		return 0, netip.AddrPort{}, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n, r.errno, r.buf = 0, 0, b
	err := r.raw.Read(r.recv)
	r.buf = nil
	if err != nil {
		return 0, netip.AddrPort{}, err
	}
	if r.errno != 0 {
		return 0, netip.AddrPort{}, os.NewSyscallError("recvfrom", r.errno)
	}
	return r.n, r.addr(), nil
}

// recvfrom is the read callback: one datagram into r.buf.
func (r *rawReader) recvfrom(fd uintptr) bool {
	r.salen = unix.SizeofSockaddrInet6
	n, e, ok := rawio.Call(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(unsafe.SliceData(r.buf))), uintptr(len(r.buf)), 0, //nolint:gosec // G103: kernel ABI structures of sendmmsg(2)/recvfrom(2)
		uintptr(unsafe.Pointer(&r.sa)), uintptr(unsafe.Pointer(&r.salen))) //nolint:gosec // G103: kernel ABI structures of sendmmsg(2)/recvfrom(2)
	if !ok {
		return false // wait until readable
	}
	if e == 0 {
		r.n = int(n)
	}
	r.errno = e
	return true
}

// addr decodes the sender's address of the last read.
func (r *rawReader) addr() netip.AddrPort {
	port := htons(r.sa.Port) // its own inverse
	switch r.sa.Family {
	case unix.AF_INET:
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&r.sa)) //nolint:gosec // G103: kernel ABI structures of sendmmsg(2)/recvfrom(2)
		return netip.AddrPortFrom(netip.AddrFrom4(s4.Addr), port)
	case unix.AF_INET6:
		a := netip.AddrFrom16(r.sa.Addr)
		if r.sa.Scope_id != 0 {
			a = a.WithZone(r.zone(r.sa.Scope_id))
		}
		return netip.AddrPortFrom(a, port)
	}
	return netip.AddrPort{}
}

// zone names an interface index as Go's own reads do (link-local senders).
func (r *rawReader) zone(index uint32) string {
	if z, ok := r.zones[index]; ok {
		return z
	}
	z := strconv.FormatUint(uint64(index), 10)
	if ifi, err := net.InterfaceByIndex(int(index)); err == nil {
		z = ifi.Name
	}
	if r.zones == nil || len(r.zones) > 64 {
		r.zones = map[uint32]string{}
	}
	r.zones[index] = z
	return z
}
