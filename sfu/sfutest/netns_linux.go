package sfutest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// Namespace is a network namespace joined to this one by a veth pair: HostIP is this side's
// address (where a server listens), IP the namespace's. Sockets made by ListenUDP live in the
// namespace, so an in-process client's traffic crosses the veth, where SetLoss drops a share of
// it (an nftables rule: kernels without sch_netem, such as this project's VMs, still have
// nf_tables' numgen).
type Namespace struct {
	Name, HostIP, IP string
	dev, hostDev     string
	ip, nft          string
}

var namespaces atomic.Int32

// NewNamespace makes a namespace and its veth link, removed when the test ends. It needs root
// and ip; under CI=true their absence fails the test, elsewhere it skips.
func NewNamespace(t testing.TB) *Namespace {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test needs root (network namespaces)")
		}
		t.Skip("this test needs root (network namespaces)")
	}
	n := int(namespaces.Add(1))
	id := (os.Getpid()%2000)*16 + n%16
	ns := &Namespace{
		Name:    fmt.Sprintf("sluice-t%d", id),
		HostIP:  fmt.Sprintf("10.%d.%d.%d", 100+id/16000, id/64%250, id%64*4+1),
		dev:     fmt.Sprintf("vt%dn", id),
		hostDev: fmt.Sprintf("vt%dh", id),
		ip:      RequireTool(t, "ip"),
	}
	ns.IP = ns.HostIP[:strings.LastIndex(ns.HostIP, ".")+1] + fmt.Sprint(id%64*4+2)
	ns.run(t, ns.ip, "netns", "add", ns.Name)
	t.Cleanup(func() {
		_ = exec.Command(ns.ip, "link", "del", ns.hostDev).Run() //nolint:gosec // the test's own tools
		_ = exec.Command(ns.ip, "netns", "del", ns.Name).Run()   //nolint:gosec // the test's own tools
	})
	ns.run(t, ns.ip, "link", "add", ns.hostDev, "type", "veth", "peer", "name", ns.dev, "netns", ns.Name)
	ns.run(t, ns.ip, "addr", "add", ns.HostIP+"/30", "dev", ns.hostDev)
	ns.run(t, ns.ip, "link", "set", ns.hostDev, "up")
	ns.run(t, ns.ip, "-n", ns.Name, "addr", "add", ns.IP+"/30", "dev", ns.dev)
	ns.run(t, ns.ip, "-n", ns.Name, "link", "set", ns.dev, "up")
	ns.run(t, ns.ip, "-n", ns.Name, "link", "set", "lo", "up")
	return ns
}

func (ns *Namespace) run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil { //nolint:gosec // the test's own tools
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// SetLoss drops a random percent of the packets entering and leaving the namespace (0 removes
// the rule).
func (ns *Namespace) SetLoss(t testing.TB, percent int) {
	t.Helper()
	if ns.nft == "" {
		ns.nft = RequireTool(t, "nft")
	}
	_ = exec.Command(ns.ip, "netns", "exec", ns.Name, ns.nft, "delete", "table", "inet", "loss").Run() //nolint:gosec // the test's own tools
	if percent <= 0 {
		return
	}
	rules := fmt.Sprintf(`table inet loss {
	chain in { type filter hook input priority 0; iifname %q numgen random mod 100 < %d counter drop; }
	chain out { type filter hook output priority 0; oifname %q numgen random mod 100 < %d counter drop; }
}`, ns.dev, percent, ns.dev, percent)
	cmd := exec.Command(ns.ip, "netns", "exec", ns.Name, ns.nft, "-f", "-") //nolint:gosec // the test's own tools
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
}

// Shape limits what this side sends into the namespace to rate (tc syntax, "400kbit") with a
// token bucket filter (sch_tbf; sch_netem is missing on this project's VMs); "" lifts it.
func (ns *Namespace) Shape(t testing.TB, rate string) {
	t.Helper()
	tc := RequireTool(t, "tc")
	if rate == "" {
		ns.run(t, tc, "qdisc", "del", "dev", ns.hostDev, "root")
		return
	}
	ns.run(t, tc, "qdisc", "replace", "dev", ns.hostDev, "root", "tbf", "rate", rate, "burst", "16kbit", "latency", "200ms")
}

// ListenUDP opens a UDP socket on the namespace's address (port 0: any). The calling thread
// enters the namespace only while it makes the socket.
func (ns *Namespace) ListenUDP(t testing.TB) *net.UDPConn {
	t.Helper()
	type result struct {
		conn *net.UDPConn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		// A thread that fails to return to its namespace is not unlocked, so the runtime
		// discards it instead of reusing it.
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer func() { _ = orig.Close() }()
		target, err := os.Open("/run/netns/" + ns.Name)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer func() { _ = target.Close() }()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: err}
			return
		}
		conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ns.IP)})
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{conn, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("a socket in namespace %s: %v", ns.Name, r.err)
	}
	return r.conn
}
