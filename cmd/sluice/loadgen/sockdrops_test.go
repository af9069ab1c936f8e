package loadgen

import (
	"net"
	"runtime"
	"strings"
	"testing"
)

func TestSNMPRcvbufErrors(t *testing.T) {
	const snmp = `Ip: Forwarding DefaultTTL
Ip: 1 64
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 14850100 18438 6921306 2453735 6921305 0 0 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 0 0 0 0 7 0 0 0 0
`
	if n, ok := snmpRcvbufErrors(strings.NewReader(snmp)); !ok || n != 6921305 {
		t.Errorf("RcvbufErrors = %d, %v; want 6921305", n, ok)
	}
	if _, ok := snmpRcvbufErrors(strings.NewReader("Ip: Forwarding\nIp: 1\n")); ok {
		t.Error("RcvbufErrors found where there is no Udp line")
	}
	if n, ok := snmp6RcvbufErrors(strings.NewReader("Udp6InDatagrams \t33\nUdp6RcvbufErrors \t12\n")); !ok || n != 12 {
		t.Errorf("Udp6RcvbufErrors = %d, %v; want 12", n, ok)
	}
}

func TestSocketDropsByInodeAndPort(t *testing.T) {
	const udp = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  101: 0100007F:9C41 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5551 2 00000000a8737177 17
  102: 0100007F:9C42 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5552 2 00000000ba9a2778 4
`
	byInode, byPort := map[uint64]uint64{}, map[uint16]uint64{}
	socketDrops(strings.NewReader(udp), map[uint64]bool{5551: true}, byInode, byPort)
	if len(byInode) != 1 || byInode[5551] != 17 || byPort[0x9C41] != 17 || len(byPort) != 1 {
		t.Errorf("only socket 5551 (port %d, 17 drops) is ours: got %v and %v", 0x9C41, byInode, byPort)
	}
}

// A socket that is not read overflows: the kernel's drops at it are counted as this
// process's, by its port, and in the machine's RcvbufErrors.
func TestReadUDPDropsCountsOverflow(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/net counters are Linux's")
	}
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	if err := rx.SetReadBuffer(4096); err != nil { // the kernel's minimum: a few packets
		t.Fatal(err)
	}
	tx, err := net.DialUDP("udp4", nil, rx.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	before := readUDPDrops()
	if !before.ok {
		t.Fatal("no /proc/net/snmp")
	}
	const sent = 200
	for range sent {
		if _, err := tx.Write(make([]byte, 1200)); err != nil {
			t.Fatal(err)
		}
	}
	after := readUDPDrops()
	port := uint16(rx.LocalAddr().(*net.UDPAddr).Port) //nolint:gosec // a port
	own, machine := after.since(before)
	drops := after.portSince(before, port)
	if drops == 0 || drops > sent || own < drops || machine < drops {
		t.Errorf("%d packets sent to an unread socket: %d dropped at it, %d at this process's sockets, %d RcvbufErrors on the machine",
			sent, drops, own, machine)
	}
}
