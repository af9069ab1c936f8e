package sfutest

import (
	"crypto/rand"
	"encoding/binary"
	"hash/crc32"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// UDPGarbage sprays datagrams at a media port from several loopback sockets until stopped: a
// fault injector for tests, not a fuzzer. Each datagram comes from Packet (the default sends
// random bytes, RTP-, RTCP- and DTLS-looking packets and STUN binding requests for unknown
// sessions).
type UDPGarbage struct {
	// Targets are the addresses to spray, in turn.
	Targets []*net.UDPAddr
	// PerSecond is the rate of all senders together (default 10,000).
	PerSecond int
	// Senders is the number of source sockets (default 8).
	Senders int
	// Packet fills buf with the i-th datagram of a sender and returns it; nil is the default.
	Packet func(i int, buf []byte) []byte

	sent atomic.Int64
	stop chan struct{}
	wg   sync.WaitGroup
}

// Start begins spraying; the test's cleanup stops it.
func (g *UDPGarbage) Start(t testing.TB) {
	t.Helper()
	if g.PerSecond <= 0 {
		g.PerSecond = 10000
	}
	if g.Senders <= 0 {
		g.Senders = 8
	}
	if g.Packet == nil {
		g.Packet = RandomGarbage
	}
	g.stop = make(chan struct{})
	const period = 4 * time.Millisecond
	burst := max(1, g.PerSecond*int(period/time.Millisecond)/1000/g.Senders)
	for range g.Senders {
		conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			defer func() { _ = conn.Close() }()
			buf := make([]byte, 1500)
			tick := time.NewTicker(period)
			defer tick.Stop()
			for i := 0; ; {
				select {
				case <-g.stop:
					return
				case <-tick.C:
				}
				for range burst {
					if _, err := conn.WriteToUDP(g.Packet(i, buf), g.Targets[i%len(g.Targets)]); err == nil {
						g.sent.Add(1)
					}
					i++
				}
			}
		}()
	}
	t.Cleanup(func() { g.Stop() })
}

// Stop ends the spray and returns how many datagrams were sent. Idempotent.
func (g *UDPGarbage) Stop() int64 {
	select {
	case <-g.stop:
	default:
		close(g.stop)
	}
	g.wg.Wait()
	return g.sent.Load()
}

// RandomGarbage is the default UDPGarbage packet: in turn random bytes of varying length, an
// RTP-looking packet, an RTCP-looking one, a DTLS record header with random content, and a
// STUN binding request for an unknown ICE session.
func RandomGarbage(i int, buf []byte) []byte {
	var pkt []byte
	switch i % 5 {
	case 0:
		pkt = buf[:1+i%1200]
		_, _ = rand.Read(pkt)
	case 1:
		pkt = buf[:200]
		_, _ = rand.Read(pkt)
		pkt[0], pkt[1] = 0x80, 96
	case 2:
		pkt = buf[:64]
		_, _ = rand.Read(pkt)
		pkt[0], pkt[1] = 0x81, 200 // a sender report
	case 3:
		pkt = buf[:150]
		_, _ = rand.Read(pkt)
		pkt[0], pkt[1], pkt[2] = 22, 0xfe, 0xfd
	default:
		pkt = FakeBindingRequest("nobody:nothing")
	}
	return pkt
}

// FakeBindingRequest builds a STUN binding request (RFC 8489) for username with a
// MESSAGE-INTEGRITY that cannot verify and a correct FINGERPRINT, so that it passes every
// check before the integrity one.
func FakeBindingRequest(username string) []byte {
	attr := func(b []byte, typ uint16, v []byte) []byte {
		b = binary.BigEndian.AppendUint16(b, typ)
		b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
		b = append(b, v...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	b := make([]byte, 20, 128)
	binary.BigEndian.PutUint16(b[0:], 0x0001)
	binary.BigEndian.PutUint32(b[4:], 0x2112A442)
	_, _ = rand.Read(b[8:20])
	b = attr(b, 0x0006, []byte(username))
	mi := make([]byte, 20)
	_, _ = rand.Read(mi)
	b = attr(b, 0x0008, mi)
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)-20+8)) // the length covers the fingerprint
	fp := crc32.ChecksumIEEE(b) ^ 0x5354554e
	return attr(b, 0x8028, binary.BigEndian.AppendUint32(nil, fp))
}
