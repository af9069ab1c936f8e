package srt

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest/ingesttest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// newLossyLink makes a network namespace whose veth link to this one loses 5 % of its packets
// each way (sfutest.Namespace: an nftables rule, as this project's kernels have no sch_netem).
// It needs root, ip and nft; under CI=true a missing piece fails the test, elsewhere it skips.
func newLossyLink(t *testing.T) *sfutest.Namespace {
	t.Helper()
	l := sfutest.NewNamespace(t)
	l.SetLoss(t, 5)
	return l
}

// dropped returns how many packets the loss rules dropped, in and out.
func dropped(l *sfutest.Namespace) string {
	out, _ := exec.Command("ip", "netns", "exec", l.Name, "nft", "list", "table", "inet", "loss").CombinedOutput() //nolint:gosec // the test's own tools
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
		c.Listen = l.HostIP + ":0"
		c.Latency = 500 * time.Millisecond
	}})
	url := "srt://" + h.addr + "?streamid=publish:studio/lossy&latency=500000"
	args := append([]string{"netns", "exec", l.Name, sfutest.RequireTool(t, "ffmpeg")}, ffmpegArgs(url, 12)...)
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
	t.Logf("loss by nftables: dropped %s; %d frames, %d keyframes", dropped(l), len(ts), keys)
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
