package sfutest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
)

// Buffer is a bytes.Buffer safe for concurrent use: the target of a process's output or a test
// logger, read while it is written.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// FreeTCPPort returns a TCP port that was free a moment ago on 127.0.0.1.
func FreeTCPPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// FreeUDPPair returns an even UDP port on 127.0.0.1 whose successor is free too: an RTP/RTCP
// pair (RFC 3550 §11). It is taken below the kernel's ephemeral range, so that no socket bound
// to port 0 meanwhile (the daemon's own WebRTC sockets, other tests') can take it before the
// daemon binds it.
func FreeUDPPair(t testing.TB) (int, int) {
	t.Helper()
	lo := ephemeralStart()
	for range 500 {
		var p int
		if lo > 12000 {
			p = (10000 + rand.IntN(lo-12000)) &^ 1 //nolint:gosec // a test port, not a secret
		} else {
			c, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			p = c.LocalAddr().(*net.UDPAddr).Port &^ 1
			_ = c.Close()
		}
		a, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		b, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p+1))
		_ = a.Close()
		if err != nil {
			continue
		}
		_ = b.Close()
		return p, p + 1
	}
	t.Fatal("no free UDP port pair")
	return 0, 0
}

// ephemeralStart is the first port of the kernel's range for sockets bound to port 0 (Linux's
// default when it cannot be read).
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	var lo, hi int
	if n, _ := fmt.Sscan(string(b), &lo, &hi); n == 2 && lo > 0 {
		return lo
	}
	return 32768
}
