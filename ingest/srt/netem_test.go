package srt

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest/ingesttest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// lossyLink is a veth pair between this namespace and a new network namespace whose traffic
// loses 5 % of its packets each way: tc netem where the kernel has it, else an nftables rule
// in the namespace that drops a random 5 % (the same loss; kernels without sch_netem, such as
// this project's VMs, still have nf_tables' numgen).
type lossyLink struct {
	ns       string
	hostIP   string // the address of this side, where the server listens
	how      string // "netem" or "nftables"
	nsDevice string
}

// newLossyLink makes the link; it needs root (network namespaces, veth, qdiscs) and ip, and
// tc or nft. Under CI=true a missing piece fails the test, elsewhere it skips.
func newLossyLink(t *testing.T) *lossyLink {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the lossy-link test needs root (network namespaces)")
		}
		t.Skip("the lossy-link test needs root (network namespaces)")
	}
	ip := sfutest.RequireTool(t, "ip")
	id := os.Getpid() % 50000
	l := &lossyLink{ns: fmt.Sprintf("sluice-srt-%d", id), hostIP: fmt.Sprintf("10.%d.%d.1", 200+id/10000%50, id%250), nsDevice: fmt.Sprintf("vs%dn", id)}
	hostDev := fmt.Sprintf("vs%dh", id)
	nsIP := strings.TrimSuffix(l.hostIP, ".1") + ".2"
	run := func(name string, args ...string) error {
		out, err := exec.Command(name, args...).CombinedOutput() //nolint:gosec // the test's own tools
		if err != nil {
			return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
		}
		return nil
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(run(ip, "netns", "add", l.ns))
	t.Cleanup(func() {
		_ = run(ip, "link", "del", hostDev)
		_ = run(ip, "netns", "del", l.ns)
	})
	must(run(ip, "link", "add", hostDev, "type", "veth", "peer", "name", l.nsDevice, "netns", l.ns))
	must(run(ip, "addr", "add", l.hostIP+"/30", "dev", hostDev))
	must(run(ip, "link", "set", hostDev, "up"))
	must(run(ip, "-n", l.ns, "addr", "add", nsIP+"/30", "dev", l.nsDevice))
	must(run(ip, "-n", l.ns, "link", "set", l.nsDevice, "up"))
	must(run(ip, "-n", l.ns, "link", "set", "lo", "up"))
	tc, tcErr := exec.LookPath("tc")
	netem := tcErr
	if tcErr == nil {
		if netem = run(ip, "netns", "exec", l.ns, tc, "qdisc", "add", "dev", l.nsDevice, "root", "netem", "loss", "5%"); netem == nil {
			must(run(tc, "qdisc", "add", "dev", hostDev, "root", "netem", "loss", "5%"))
			l.how = "netem"
			return l
		}
	}
	t.Logf("tc netem is not available (%v): 5 %% loss with nftables instead", netem)
	nft := sfutest.RequireTool(t, "nft")
	rules := fmt.Sprintf(`table inet loss {
	chain in { type filter hook input priority 0; iifname %q numgen random mod 100 < 5 counter drop; }
	chain out { type filter hook output priority 0; oifname %q numgen random mod 100 < 5 counter drop; }
}`, l.nsDevice, l.nsDevice)
	cmd := exec.Command(ip, "netns", "exec", l.ns, nft, "-f", "-") //nolint:gosec // the test's own tools
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	l.how = "nftables"
	return l
}

// dropped returns how many packets the nftables rules dropped (0 with netem).
func (l *lossyLink) dropped(t *testing.T) string {
	if l.how != "nftables" {
		return "(netem)"
	}
	out, _ := exec.Command("ip", "netns", "exec", l.ns, "nft", "list", "table", "inet", "loss").CombinedOutput() //nolint:gosec // the test's own tools
	var counts []string
	for _, line := range strings.Split(string(out), "\n") {
		if i := strings.Index(line, "counter packets "); i >= 0 {
			counts = append(counts, strings.Fields(line[i:])[2])
		}
	}
	return strings.Join(counts, " in, ") + " out"
}

// ffmpeg publishes over a link that loses 5 % of the packets each way: SRT's retransmissions
// still deliver every frame (the frame times step by exactly one frame from the first to the
// last), and stream.stats counts the retransmissions.
func TestLossyLinkEveryFrame(t *testing.T) {
	l := newLossyLink(t)
	h := newHarness(t, harnessOptions{stats: 500 * time.Millisecond, config: func(c *Config) {
		c.Listen = l.hostIP + ":0"
		c.Latency = 500 * time.Millisecond
	}})
	url := "srt://" + h.addr + "?streamid=publish:studio/lossy&latency=500000"
	args := append([]string{"netns", "exec", l.ns, sfutest.RequireTool(t, "ffmpeg")}, ffmpegArgs(url, 12)...)
	out := &sfutest.Buffer{}
	_, exited := ingesttest.Start(t, out, "ip", args...)
	p := h.Participant("studio", "lossy")
	video := ingesttest.TrackOf(t, p, sfu.KindVideo)
	f := &frames{}
	sub, err := video.Subscribe(f, sfu.SubscribeOptions{QueueSize: 8192})
	ingesttest.Must(t, err)
	defer sub.Close()
	select {
	case <-exited:
	case <-time.After(40 * time.Second):
		t.Fatal("ffmpeg did not end")
	}
	h.WaitEvent("participant.left", 15*time.Second, ingesttest.Is(sfu.EventParticipantLeft, "lossy"))
	ts, keys := f.snapshot()
	t.Logf("loss by %s: dropped %s; %d frames, %d keyframes", l.how, l.dropped(t), len(ts), keys)
	if len(ts) < 300 || keys < 10 {
		t.Fatalf("%d frames, %d keyframes through the lossy link (want 12 s at 30 fps)\nffmpeg:\n%s", len(ts), keys, out.String())
	}
	everyFrame(t, ts)
	var resent int64
	for _, e := range h.Events.Events(0) {
		if e.Type == sfu.EventStreamStats && e.Stream != nil && e.Stream.Retransmits != nil {
			resent = max(resent, *e.Stream.Retransmits)
		}
	}
	if resent == 0 {
		t.Error("stream.stats counted no retransmission: the link lost nothing?")
	}
}
