package srt

import (
	"crypto/rand"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest/ingesttest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// srtGarbage adds SRT-looking datagrams to the default garbage: control packets (handshakes,
// keep-alives, ACKs, shutdowns) and data packets for random socket ids.
func srtGarbage(i int, buf []byte) []byte {
	if i%3 != 0 {
		return sfutest.RandomGarbage(i, buf)
	}
	pkt := buf[:16+64]
	_, _ = rand.Read(pkt)
	if i%2 == 0 {
		// control: F=1, type among handshake (0), keep-alive (1), ACK (2), shutdown (5)
		typ := []uint16{0, 1, 2, 5}[i/2%4]
		binary.BigEndian.PutUint16(pkt[0:], 0x8000|typ)
	} else {
		pkt[0] &= 0x7f // data
	}
	return pkt
}

// UDP garbage at the SRT port, 10k datagrams a second from other loopback ports (random bytes,
// SRT control and data packets for unknown sockets), while ffmpeg publishes over SRT: every
// frame arrives and the publish is not disturbed.
func TestUDPGarbageAtTheSRTPort(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	_, exited := ingesttest.Start(t, &sfutest.Buffer{}, "ffmpeg", ffmpegArgs(srtURL(h.addr, "publish:noisy/ff", ""), 6)...)
	p := h.Participant("noisy", "ff")
	video := ingesttest.TrackOf(t, p, sfu.KindVideo)
	f := &frames{}
	sub, err := video.Subscribe(f, sfu.SubscribeOptions{QueueSize: 8192})
	ingesttest.Must(t, err)
	defer sub.Close()
	addr, err := net.ResolveUDPAddr("udp4", h.addr)
	ingesttest.Must(t, err)
	g := &sfutest.UDPGarbage{Targets: []*net.UDPAddr{addr}, Packet: srtGarbage}
	g.Start(t)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("ffmpeg did not end")
	}
	n := g.Stop()
	h.WaitEvent("participant.left", 10*time.Second, ingesttest.Is(sfu.EventParticipantLeft, "ff"))
	ts, keys := f.snapshot()
	t.Logf("%d garbage datagrams; %d frames, %d keyframes through the subscription", n, len(ts), keys)
	if n < 10000 {
		t.Fatalf("only %d garbage datagrams sent", n)
	}
	if len(ts) < 60 || keys < 2 {
		t.Fatalf("%d frames, %d keyframes through the subscription", len(ts), keys)
	}
	everyFrame(t, ts)
}
