package loadgen

import (
	"bytes"
	enc "encoding/binary"
	"net"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// A segmented datagram (UDP GSO, as the daemon sends a viewer's run of packets) is read back
// as its packets, whole and in order; a plain datagram as itself.
func TestGROConnSplitsSegments(t *testing.T) {
	rx, err := listenGRO(net.IPv4(127, 0, 0, 1))
	if err != nil {
		t.Fatalf("UDP_GRO: %v", err)
	}
	defer rx.Close()
	tx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	var payload []byte
	sizes := []int{1200, 1200, 1200, 500}
	for i, n := range sizes {
		payload = append(payload, bytes.Repeat([]byte{byte(i + 1)}, n)...)
	}
	oob := make([]byte, syscall.CmsgSpace(2))
	h := (*syscall.Cmsghdr)(unsafe.Pointer(&oob[0])) //nolint:gosec // the kernel ABI's header, inside oob
	h.Level, h.Type = solUDP, 103                    // UDP_SEGMENT
	h.SetLen(syscall.CmsgLen(2))
	enc.NativeEndian.PutUint16(oob[syscall.CmsgLen(0):], 1200)
	to := rx.LocalAddr().(*net.UDPAddr)
	if _, _, err := tx.WriteMsgUDP(payload, oob, to); err != nil {
		t.Fatalf("GSO send: %v", err)
	}
	if _, err := tx.WriteToUDP([]byte("plain"), to); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	_ = rx.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i, n := range sizes {
		got, from, err := rx.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		if got != n || buf[0] != byte(i+1) || buf[got-1] != byte(i+1) || from.String() != tx.LocalAddr().String() {
			t.Fatalf("packet %d: %d bytes of %d from %v, want %d bytes of %d", i, got, buf[0], from, n, i+1)
		}
	}
	got, _, err := rx.ReadFrom(buf)
	if err != nil || string(buf[:got]) != "plain" {
		t.Fatalf("plain datagram: %q, %v", buf[:got], err)
	}
}
