package rtc

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/transport/v4/test"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
)

// A viewer's NACK is answered from the down track's history: the packets come again with the
// same sequence numbers, each at most maxResends times however often it is asked for.
func TestNACKRetransmission(t *testing.T) {
	defer test.CheckRoutines(t)()
	h := newHarness(t, auth.Config{})
	defer h.close()
	pub := publish(t, clientAPI(t), h.http.URL+"/whip/nack", "")
	defer pub.close()
	v := newNACKViewer(t, h, "nack")
	defer v.close()

	lost := v.received(40, 50)
	for range 1 + 2*maxResends { // back to back, while the packet is still in the history
		v.nack(lost)
	}
	// Then packets that were never asked for: once they are back, every earlier NACK was
	// handled (one goroutine reads the viewer's RTCP in order).
	marker := v.received(50, 51)
	v.nack(marker)
	waitUntil(t, "the marker's retransmission", 5*time.Second, func() bool { return v.seenAtLeast(marker, 2) })
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, seq := range lost {
		if n := v.seen[seq]; n != 1+maxResends {
			t.Errorf("packet %d came %d times, want once and %d retransmissions", seq, n, maxResends)
		}
	}
}

// While the hub is congested (its send path drops packets), NACKs are not answered: the
// retransmissions would cost the CPU that is missing. Once it is not, they are again.
func TestNACKIgnoredWhileCongested(t *testing.T) {
	defer test.CheckRoutines(t)()
	h := newHarnessWith(t, auth.Config{}, func(o *sfu.Options) { o.Limits = sfu.Limits{CPUBudget: 0.9, Shed: false} })
	defer h.close()
	var mu sync.Mutex
	var sent, dropped uint64
	h.hub.WatchSend(func() (uint64, uint64) { mu.Lock(); defer mu.Unlock(); return sent, dropped })
	pub := publish(t, clientAPI(t), h.http.URL+"/whip/nack", "")
	defer pub.close()
	v := newNACKViewer(t, h, "nack")
	defer v.close()

	// The send path drops 10 % of its packets every second.
	stop := make(chan struct{})
	var dropping sync.WaitGroup
	dropping.Add(1)
	go func() {
		defer dropping.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				mu.Lock()
				sent, dropped = sent+900, dropped+100
				mu.Unlock()
			}
		}
	}()
	waitUntil(t, "the hub to be congested", 10*time.Second, h.hub.Congested)
	ignored := v.received(40, 50)
	v.nack(ignored)
	close(stop)
	dropping.Wait()
	waitUntil(t, "the congestion to end", 10*time.Second, func() bool { return !h.hub.Congested() })
	answered := v.received(50, 60)
	v.nack(answered)
	waitUntil(t, "the retransmissions", 5*time.Second, func() bool { return v.seenAtLeast(answered, 2) })
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, seq := range ignored {
		if n := v.seen[seq]; n != 1 {
			t.Errorf("packet %d NACKed while congested came %d times", seq, n)
		}
	}
}

// nackViewer is a WHEP viewer of video that accepts duplicates (SRTP replay protection off)
// and counts each sequence number.
type nackViewer struct {
	t       *testing.T
	pc      *webrtc.PeerConnection
	sess    *Session
	readers sync.WaitGroup

	mu    sync.Mutex
	seen  map[uint16]int
	order []uint16
	ssrc  uint32
}

func newNACKViewer(t *testing.T, h *harness, room string) *nackViewer {
	t.Helper()
	waitUntil(t, "publisher", 10*time.Second, func() bool {
		r := h.hub.Room(room)
		return r != nil && r.MainPublisher() != nil && len(r.MainPublisher().Tracks()) == 2
	})
	api := bareAPI(t, webrtc.NetworkTypeUDP4, func(s *webrtc.SettingEngine) { s.DisableSRTPReplayProtection(true) })
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	v := &nackViewer{t: t, pc: pc, seen: map[uint16]int{}}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		v.readers.Add(1)
		defer v.readers.Done()
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			v.mu.Lock()
			v.ssrc = p.SSRC
			v.seen[p.SequenceNumber]++
			v.order = append(v.order, p.SequenceNumber)
			v.mu.Unlock()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v.sess, err = Negotiate(ctx, h.http.URL+"/whep/"+room, "", pc)
	if err != nil {
		_ = pc.Close()
		t.Fatal(err)
	}
	return v
}

// received waits for the to-th packet and returns the sequence numbers of packets from..to-1
// in their order of arrival.
func (v *nackViewer) received(from, to int) []uint16 {
	v.t.Helper()
	waitUntil(v.t, "video", 10*time.Second, func() bool { v.mu.Lock(); defer v.mu.Unlock(); return len(v.order) > to })
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]uint16(nil), v.order[from:to]...)
}

func (v *nackViewer) nack(seqs []uint16) {
	v.t.Helper()
	v.mu.Lock()
	ssrc := v.ssrc
	v.mu.Unlock()
	if err := v.pc.WriteRTCP([]rtcp.Packet{&rtcp.TransportLayerNack{MediaSSRC: ssrc, Nacks: rtcp.NackPairsFromSequenceNumbers(seqs)}}); err != nil {
		v.t.Fatal(err)
	}
}

func (v *nackViewer) seenAtLeast(seqs []uint16, n int) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, seq := range seqs {
		if v.seen[seq] < n {
			return false
		}
	}
	return true
}

func (v *nackViewer) close() {
	_ = v.sess.Close(context.Background())
	_ = v.pc.Close()
	v.readers.Wait()
}
