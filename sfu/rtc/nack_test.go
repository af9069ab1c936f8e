package rtc

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/transport/v4/test"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu/auth"
)

// A viewer's NACK is answered from the down track's history: the packets come again with the
// same sequence numbers.
func TestNACKRetransmission(t *testing.T) {
	defer test.CheckRoutines(t)()
	h := newHarness(t, auth.Config{})
	defer h.close()
	pub := publish(t, clientAPI(t), h.http.URL+"/whip/nack", "")
	defer pub.close()
	waitUntil(t, "publisher", 10*time.Second, func() bool {
		r := h.hub.Room("nack")
		return r != nil && r.MainPublisher() != nil && len(r.MainPublisher().Tracks()) == 2
	})

	// A viewer that accepts duplicates (SRTP replay protection off) and counts each sequence.
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	var s webrtc.SettingEngine
	s.SetIncludeLoopbackCandidate(true)
	s.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	s.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	s.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	s.DisableSRTPReplayProtection(true)
	api := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(&interceptor.Registry{}), webrtc.WithSettingEngine(s))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[uint16]int{}
	var order []uint16
	var ssrc uint32
	var readers sync.WaitGroup
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		readers.Add(1)
		defer readers.Done()
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			mu.Lock()
			ssrc = p.SSRC
			seen[p.SequenceNumber]++
			order = append(order, p.SequenceNumber)
			mu.Unlock()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := Negotiate(ctx, h.http.URL+"/whep/nack", "", pc)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sess.Close(context.Background()); _ = pc.Close(); readers.Wait() }()
	waitUntil(t, "video", 10*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(order) > 60 })

	mu.Lock()
	lost := append([]uint16(nil), order[40:50]...)
	mediaSSRC := ssrc
	mu.Unlock()
	nack := &rtcp.TransportLayerNack{MediaSSRC: mediaSSRC, Nacks: rtcp.NackPairsFromSequenceNumbers(lost)}
	if err := pc.WriteRTCP([]rtcp.Packet{nack}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the retransmissions", 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, seq := range lost {
			if seen[seq] < 2 {
				return false
			}
		}
		return true
	})
}
