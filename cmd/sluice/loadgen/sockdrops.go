package loadgen

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// udpDrops is what the kernel dropped at the load generator's receiving sockets: a viewer's
// socket whose buffer is full when a packet arrives drops it, and neither the daemon nor the
// viewer's RTP counters can tell that loss from loss on the way. Read on Linux only.
type udpDrops struct {
	// own is the drops counter of each of this process's UDP sockets, by inode
	// (/proc/net/udp and udp6, "drops", of the sockets /proc/self/fd holds).
	own map[uint64]uint64
	// port is the drops of this process's UDP sockets by local port (a viewer's socket is
	// told by the port of its selected candidate).
	port map[uint16]uint64
	// rcvbufErrors is the machine's UDP RcvbufErrors (/proc/net/snmp and snmp6): every
	// process's sockets, so other programs' overflows count too.
	rcvbufErrors uint64
	ok           bool
}

// readUDPDrops reads the counters; ok is false where /proc does not have them.
func readUDPDrops() udpDrops {
	d := udpDrops{own: map[uint64]uint64{}, port: map[uint16]uint64{}}
	v4, err := os.Open("/proc/net/snmp")
	if err != nil {
		return d
	}
	defer func() { _ = v4.Close() }()
	n, ok := snmpRcvbufErrors(v4)
	if !ok {
		return d
	}
	d.rcvbufErrors, d.ok = n, true
	if v6, err := os.Open("/proc/net/snmp6"); err == nil {
		defer func() { _ = v6.Close() }()
		n, _ := snmp6RcvbufErrors(v6)
		d.rcvbufErrors += n
	}
	inodes := ownSocketInodes()
	for _, name := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		socketDrops(f, inodes, d.own, d.port)
		_ = f.Close()
	}
	return d
}

// since returns the drops at this process's sockets and the machine's RcvbufErrors from
// before to d. A socket opened in between counts from zero; one closed in between is not
// counted.
func (d udpDrops) since(before udpDrops) (own, machine uint64) {
	for inode, n := range d.own {
		own += n - min(n, before.own[inode])
	}
	return own, d.rcvbufErrors - min(d.rcvbufErrors, before.rcvbufErrors)
}

// snmpRcvbufErrors reads RcvbufErrors from the "Udp:" header and value lines of /proc/net/snmp.
func snmpRcvbufErrors(r io.Reader) (uint64, bool) {
	var header []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "Udp:" {
			continue
		}
		if header == nil {
			header = fields
			continue
		}
		for i, name := range header {
			if name == "RcvbufErrors" && i < len(fields) {
				n, err := strconv.ParseUint(fields[i], 10, 64)
				return n, err == nil
			}
		}
		return 0, false
	}
	return 0, false
}

// snmp6RcvbufErrors reads Udp6RcvbufErrors from /proc/net/snmp6 (one "name value" a line).
func snmp6RcvbufErrors(r io.Reader) (uint64, bool) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 2 && fields[0] == "Udp6RcvbufErrors" {
			n, err := strconv.ParseUint(fields[1], 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// socketDrops adds to byInode and byPort the drops of the sockets in r (/proc/net/udp or udp6)
// whose inode is in inodes.
func socketDrops(r io.Reader, inodes map[uint64]bool, byInode map[uint64]uint64, byPort map[uint16]uint64) {
	sc := bufio.NewScanner(r)
	sc.Scan() // the header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 13 {
			continue
		}
		inode, err1 := strconv.ParseUint(fields[9], 10, 64)
		drops, err2 := strconv.ParseUint(fields[len(fields)-1], 10, 64)
		if err1 != nil || err2 != nil || !inodes[inode] {
			continue
		}
		byInode[inode] = drops
		if _, hex, ok := strings.Cut(fields[1], ":"); ok { // local_address: hex address:port
			if port, err := strconv.ParseUint(hex, 16, 16); err == nil {
				byPort[uint16(port)] += drops
			}
		}
	}
}

// portSince returns the drops at this process's socket on port since before.
func (d udpDrops) portSince(before udpDrops, port uint16) uint64 {
	n := d.port[port]
	return n - min(n, before.port[port])
}

// ownSocketInodes returns the inodes of the sockets this process holds open.
func ownSocketInodes() map[uint64]bool {
	inodes := map[uint64]bool{}
	fds, _ := filepath.Glob("/proc/self/fd/*")
	for _, fd := range fds {
		target, err := os.Readlink(fd)
		if err != nil {
			continue
		}
		if s, ok := strings.CutPrefix(target, "socket:["); ok {
			if n, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
				inodes[n] = true
			}
		}
	}
	return inodes
}
