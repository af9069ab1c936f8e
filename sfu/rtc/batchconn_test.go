package rtc

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Packets to several destinations, interleaved, of mixed sizes (video fragments of one size,
// shorter last fragments, small audio packets): each destination receives each of its packets
// once, whole and in order, with segmentation offload and without.
func TestBatchConnDelivers(t *testing.T) {
	for _, gso := range []bool{true, false} {
		name := map[bool]string{true: "gso", false: "plain"}[gso]
		t.Run(name, func(t *testing.T) {
			conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			c, err := newBatchConn(conn)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if gso && !c.gso.Load() {
				t.Log("this kernel has no UDP GSO: testing the plain path twice")
			}
			c.gso.Store(c.gso.Load() && gso)

			const dests, frames = 4, 30
			var rx []*net.UDPConn
			for range dests {
				r, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					t.Fatal(err)
				}
				_ = r.SetReadBuffer(4 << 20)
				defer r.Close()
				rx = append(rx, r)
			}
			var want [dests][]int // sizes in order
			seq := [dests]uint32{}
			pkt := make([]byte, 1500)
			send := func(d, size int) { // an RTP packet (paced), its number in bytes 4 to 8
				pkt[0] = 0x80
				binary.BigEndian.PutUint32(pkt[4:], seq[d])
				for i := 8; i < size; i++ {
					pkt[i] = byte(int(seq[d]) + i)
				}
				seq[d]++
				want[d] = append(want[d], size)
				if _, err := c.WriteToAddrPort(pkt[:size], rx[d].LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
					t.Fatal(err)
				}
			}
			for f := range frames {
				for d := range dests { // each viewer's frame in a burst, as a subscription writes it
					for range 6 {
						send(d, 1200)
					}
					send(d, 300+f)
					send(d, 120) // audio
				}
				time.Sleep(2 * time.Millisecond)
			}
			buf := make([]byte, 2000)
			for d, r := range rx {
				for i, size := range want[d] {
					_ = r.SetReadDeadline(time.Now().Add(5 * time.Second))
					n, err := r.Read(buf)
					if err != nil {
						t.Fatalf("destination %d packet %d: %v", d, i, err)
					}
					if n != size || binary.BigEndian.Uint32(buf[4:]) != uint32(i) {
						t.Fatalf("destination %d packet %d: %d bytes seq %d, want %d bytes seq %d", d, i, n, binary.BigEndian.Uint32(buf[4:]), size, i)
					}
					for j := 8; j < n; j++ {
						if buf[j] != byte(i+j) {
							t.Fatalf("destination %d packet %d: byte %d corrupted", d, i, j)
						}
					}
				}
			}
			sent, calls, dropped := c.sent.Load(), c.syscalls.Load(), c.dropped.Load()
			if total := uint64(dests * frames * 8); sent != total || dropped != 0 {
				t.Fatalf("sent %d dropped %d, want %d sent", sent, dropped, total)
			}
			t.Logf("%d packets in %d system calls", sent, calls)
			// Paced, each destination's packets leave a few at a time, but together with the
			// other destinations' in each system call.
			if calls > sent/2 {
				t.Errorf("%d system calls for %d packets to %d destinations: the queue does not batch", calls, sent, dests)
			}
		})
	}
}

// BenchmarkBatchConn is the cost of sending a 100-viewer fan-out of 1,200-byte packets
// through the queue to loopback receivers (whose kernel receive path is counted too).
func BenchmarkBatchConn(b *testing.B) {
	for _, gso := range []bool{false, true} {
		b.Run(map[bool]string{true: "gso", false: "plain"}[gso], func(b *testing.B) {
			conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Fatal(err)
			}
			c, err := newBatchConn(conn)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			if gso && !c.gso.Load() {
				b.Skip("no UDP GSO")
			}
			c.gso.Store(gso)
			const viewers = 100
			var rx []*net.UDPConn
			for range viewers {
				r, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					b.Fatal(err)
				}
				defer r.Close()
				go func() {
					buf := make([]byte, 2000)
					for {
						if _, err := r.Read(buf); err != nil {
							return
						}
					}
				}()
				rx = append(rx, r)
			}
			pkt := make([]byte, 1200)
			b.SetBytes(int64(len(pkt)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; {
				for _, r := range rx { // a frame of 8 packets to every viewer
					for range 8 {
						_, _ = c.WriteToAddrPort(pkt, r.LocalAddr().(*net.UDPAddr).AddrPort())
						i++
					}
				}
				for c.sent.Load()+c.dropped.Load() < uint64(i) {
					time.Sleep(100 * time.Microsecond)
				}
			}
		})
	}
}

// Both socket families take the batch: IPv4, IPv6, and a dual-stack wildcard socket sending to
// an IPv4 address (which the kernel wants v4-mapped).
func TestBatchConnFamilies(t *testing.T) {
	cases := []struct{ network, listen, dest string }{
		{"udp4", "127.0.0.1:0", "udp4"},
		{"udp6", "[::1]:0", "udp6"},
		{"udp", ":0", "udp4"},
	}
	for _, tc := range cases {
		t.Run(tc.network+"-"+tc.listen, func(t *testing.T) {
			la, _ := net.ResolveUDPAddr(tc.network, tc.listen)
			conn, err := net.ListenUDP(tc.network, la)
			if err != nil {
				t.Skipf("no %s on this machine: %v", tc.network, err)
			}
			c, err := newBatchConn(conn)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			host := "127.0.0.1:0"
			if tc.dest == "udp6" {
				host = "[::1]:0"
			}
			ra, _ := net.ResolveUDPAddr(tc.dest, host)
			r, err := net.ListenUDP(tc.dest, ra)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			for i := range 3 {
				if _, err := c.WriteToAddrPort([]byte{byte(i), 1, 2}, r.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
					t.Fatal(err)
				}
			}
			buf := make([]byte, 100)
			for i := range 3 {
				_ = r.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, err := r.Read(buf)
				if err != nil || n != 3 || buf[0] != byte(i) {
					t.Fatalf("packet %d: %d bytes %v, err %v", i, n, buf[:n], err)
				}
			}
		})
	}
}

// Reads report the sender's address and allocate nothing per packet.
func TestBatchConnRead(t *testing.T) {
	c := loopbackBatchConn(t)
	conn := c.conn
	tx := loopbackUDP(t)
	buf := make([]byte, 1500)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	allocs := testing.AllocsPerRun(50, func() {
		if _, err := tx.WriteToUDPAddrPort([]byte("packet"), conn.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
			t.Fatal(err)
		}
		n, from, err := c.ReadFromAddrPort(buf)
		if err != nil || string(buf[:n]) != "packet" || from != tx.LocalAddr().(*net.UDPAddr).AddrPort() {
			t.Fatalf("read %q from %v, err %v", buf[:n], from, err)
		}
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per read, want 0", allocs)
	}
	// A deadline ends a read that has nothing to read.
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, _, err := c.ReadFromAddrPort(buf); err == nil {
		t.Fatal("read past the deadline returned no error")
	}
}

// With the queue full of media, STUN and DTLS still get in (up to their own reserve); media
// does not.
func TestBatchConnFullKeepsControl(t *testing.T) {
	c := &batchConn{wake: make(chan struct{}, 1)}
	dst := netip.MustParseAddrPort("127.0.0.1:9")
	media := []byte{0x80, 96, 0, 1}
	for range maxPending {
		if _, err := c.WriteToAddrPort(media, dst); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = c.WriteToAddrPort(media, dst)
	stun := []byte{0x00, 0x01, 0x00, 0x00}
	dtls := []byte{21, 0xfe, 0xfd}
	_, _ = c.WriteToAddrPort(stun, dst)
	_, _ = c.WriteToAddrPort(dtls, dst)
	if len(c.pending) != maxPending+2 || c.dropped.Load() != 1 {
		t.Fatalf("%d queued, %d dropped: want the media packet dropped and STUN and DTLS queued", len(c.pending), c.dropped.Load())
	}
	for range maxControl + 10 {
		_, _ = c.WriteToAddrPort(stun, dst)
	}
	if len(c.pending) != maxPending+maxControl {
		t.Fatalf("%d queued: control packets must stay bounded at %d", len(c.pending), maxPending+maxControl)
	}
}

// loopbackUDP is a UDP socket on 127.0.0.1, closed with the test.
func loopbackUDP(tb testing.TB) *net.UDPConn {
	tb.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// loopbackBatchConn is a batchConn on 127.0.0.1, closed with the test.
func loopbackBatchConn(tb testing.TB) *batchConn {
	tb.Helper()
	c, err := newBatchConn(loopbackUDP(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// BenchmarkBatchConnStream sends a live stream's shape to 100 stock receivers (plain sockets
// with the default buffer, one reader each) in real time: a 30 fps video frame of 11 packets
// (a keyframe of 45 every 60 frames) and an audio packet every 20 ms, each viewer's packets
// queued together as a subscription queues them. It reports the process's CPU time per packet
// (the receivers' kernel work on loopback included), system calls per 1,000 packets, and the
// packets the receivers did not get (their sockets overflowed). ns/op is wall time, which the
// stream's pace sets: read cpu-ns/pkt.
func BenchmarkBatchConnStream(b *testing.B) {
	c := loopbackBatchConn(b)
	const viewers = 100
	var rx []*net.UDPConn
	var received atomic.Int64
	var wg sync.WaitGroup
	for range viewers {
		r := loopbackUDP(b)
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 2000)
			for {
				if _, err := r.Read(buf); err != nil {
					return
				}
				received.Add(1)
			}
		}()
		rx = append(rx, r)
	}
	addrs := make([]netip.AddrPort, viewers)
	for i, r := range rx {
		addrs[i] = r.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	video, audio := make([]byte, 1200), make([]byte, 100)
	video[0], audio[0] = 0x80, 0x80
	var ru0, ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	calls0 := c.syscalls.Load()
	b.ResetTimer()
	start := time.Now()
	written := 0
	for frame, audioAt := 0, time.Duration(0); written < b.N; frame++ {
		at := time.Duration(frame) * time.Second / 30
		if d := time.Until(start.Add(at)); d > 0 {
			time.Sleep(d)
		}
		n := 11
		if frame%60 == 0 {
			n = 45
		}
		for _, a := range addrs {
			for k := range n {
				size := len(video)
				if k == n-1 {
					size = 700
				}
				_, _ = c.WriteToAddrPort(video[:size], a)
			}
		}
		written += n * viewers
		for ; audioAt <= at; audioAt += 20 * time.Millisecond {
			for _, a := range addrs {
				_, _ = c.WriteToAddrPort(audio, a)
			}
			written += viewers
		}
	}
	for deadline := time.Now().Add(5 * time.Second); c.sent.Load()+c.dropped.Load() < uint64(written) && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // the readers finish
	b.StopTimer()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(syscall.TimevalToNsec(ru1.Utime) - syscall.TimevalToNsec(ru0.Utime) + syscall.TimevalToNsec(ru1.Stime) - syscall.TimevalToNsec(ru0.Stime))
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(written), "cpu-ns/pkt")
	b.ReportMetric(float64(c.syscalls.Load()-calls0)*1000/float64(written), "calls/kpkt")
	b.ReportMetric(float64(int64(written)-received.Load()), "lost")
	for _, r := range rx {
		_ = r.Close()
	}
	wg.Wait()
}
