package loadgen

import (
	enc "encoding/binary"
	"errors"
	"net"
	"sync"
	"syscall"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
)

// On loopback the kernel delivers a datagram to its receiver inside the sender's system call,
// so the load generator's receive path (splitting the daemon's segmented datagrams, queueing
// each packet, waking each viewer's reader) was charged to the daemon's CPU: on a real network
// it is the viewers' machines' work. Against a loopback daemon each viewer therefore reads with
// UDP generic receive offload, as QUIC stacks do: the kernel queues a segmented datagram whole
// and the viewer splits it. What the daemon is charged is then its own sending.

const (
	solUDP = 17  // SOL_UDP
	udpGRO = 104 // UDP_GRO
)

// groConn is one viewer's UDP socket read with UDP_GRO. Reads return one packet at a time.
type groConn struct {
	*net.UDPConn

	mu      sync.Mutex // owns the buffers and the rest of the last read
	buf     []byte
	oob     []byte
	rest    []byte // packets of the last read not returned yet
	segment int
	from    net.Addr
}

// listenGRO opens a UDP socket on ip with receive offload on; an error when the kernel does not
// have it.
func listenGRO(ip net.IP) (*groConn, error) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
	if err != nil {
		return nil, err
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), solUDP, udpGRO, 1)
	}); err != nil || serr != nil {
		_ = conn.Close()
		return nil, errors.Join(err, serr)
	}
	_ = conn.SetReadBuffer(1 << 20)
	return &groConn{UDPConn: conn, buf: make([]byte, 65536), oob: make([]byte, syscall.CmsgSpace(2))}, nil
}

// ReadFrom returns the next packet: the next segment of the last datagram read, or the first
// of a new one.
func (c *groConn) ReadFrom(b []byte) (int, net.Addr, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.rest) == 0 {
		n, oobn, _, from, err := c.ReadMsgUDP(c.buf, c.oob)
		if err != nil {
			return 0, nil, err
		}
		c.rest, c.segment, c.from = c.buf[:n], n, from
		if size := groSegment(c.oob[:oobn]); size > 0 {
			c.segment = size
		}
	}
	k := min(c.segment, len(c.rest))
	n := copy(b, c.rest[:k])
	c.rest = c.rest[k:]
	return n, c.from, nil
}

// groSegment returns the segment size of a coalesced read, 0 for a single packet.
func groSegment(oob []byte) int {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		if m.Header.Level == solUDP && m.Header.Type == udpGRO && len(m.Data) >= 2 {
			return int(enc.NativeEndian.Uint16(m.Data))
		}
	}
	return 0
}

// groViewerAPI returns a pion API whose connections use their own GRO socket on ip, through
// an ICE UDP mux, and the closer of that socket and mux (after the connection is closed).
func groViewerAPI(base webrtc.SettingEngine, opts []func(*webrtc.API), ip net.IP) (*webrtc.API, func(), error) {
	conn, err := listenGRO(ip)
	if err != nil {
		return nil, nil, err
	}
	mux := ice.NewUDPMuxDefault(ice.UDPMuxParams{UDPConn: conn})
	s := base
	s.SetICEUDPMux(mux)
	api := webrtc.NewAPI(append(opts, webrtc.WithSettingEngine(s))...)
	return api, func() { _ = mux.Close(); _ = conn.Close() }, nil
}
