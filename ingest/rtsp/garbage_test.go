package rtsp

import (
	"net"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// UDP garbage at the RTSP server's RTP and RTCP ports, 10k datagrams a second from other
// loopback ports, while a camera pushes over UDP and a player plays over UDP: the push stays
// up and the player's video numbering stays continuous.
func TestUDPGarbageAtTheRTPPorts(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	pub, err := pushRTSP(t, "rtsp://"+h.rtsp+"/noisy/cam", "udp")
	if err != nil {
		t.Fatal(err)
	}
	sfutest.WaitFor(t, "the publisher's tracks", 10*time.Second, func() bool {
		p := h.participant("noisy", "cam")
		return p != nil && len(p.Tracks()) == 2 && !trackOf(p, sfu.KindVideo).LastPacketAt().IsZero()
	})
	pl := playRTSP(t, "rtsp://"+h.rtsp+"/noisy", "udp")
	sfutest.WaitFor(t, "the player's video", 10*time.Second, func() bool { return pl.video.Load() > 0 })

	var targets []*net.UDPAddr
	for _, a := range h.udp {
		addr, err := net.ResolveUDPAddr("udp4", a)
		if err != nil {
			t.Fatal(err)
		}
		targets = append(targets, addr)
	}
	g := &sfutest.UDPGarbage{Targets: targets}
	g.Start(t)
	before, sentBefore := pl.video.Load(), pub.sent.Load()
	time.Sleep(4 * time.Second)
	n := g.Stop()
	got, sent := pl.video.Load()-before, pub.sent.Load()-sentBefore
	t.Logf("%d garbage datagrams; the player got %d video packets while the camera sent %d packets", n, got, sent)
	if n < 10000 {
		t.Fatalf("only %d garbage datagrams sent", n)
	}
	if got == 0 {
		t.Fatal("the player got no video under the garbage")
	}
	if j := pl.seqJumps(); j != 0 {
		t.Errorf("%d video sequence jumps at the player", j)
	}
	if p := h.participant("noisy", "cam"); p == nil {
		t.Error("the garbage ended the push")
	}
}
