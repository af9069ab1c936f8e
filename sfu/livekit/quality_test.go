package livekit

import (
	"testing"
	"time"

	lkp "github.com/livekit/protocol/livekit"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/rtc"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// namespaceAPI is a client pion stack whose ICE runs on one UDP socket in ns: its media
// crosses ns's veth. One connection per stack: two to the same server would share the
// socket and the server's address, which ICE cannot tell apart.
func namespaceAPI(t *testing.T, ns *sfutest.Namespace) *webrtc.API {
	t.Helper()
	m := clientMedia(t)
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, reg); err != nil {
		t.Fatal(err)
	}
	mux := webrtc.NewICEUDPMux(nil, ns.ListenUDP(t))
	t.Cleanup(func() { _ = mux.Close() })
	var s webrtc.SettingEngine
	s.SetICEUDPMux(mux)
	s.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	s.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(s))
}

// downlinks returns the downlink levels participant.quality reported for identity, in order.
func (e *env) downlinks(identity string) []int {
	var out []int
	for _, ev := range e.events.Events(0) {
		if ev.Type == sfu.EventParticipantQuality && ev.Participant.Identity == identity && ev.Downlink != nil {
			out = append(out, *ev.Downlink)
		}
	}
	return out
}

// One publisher and two subscribers, each in a network namespace; one subscriber's link loses
// 8 % of its packets each way (nftables): its participant.quality downlink is worse than the
// clean one's, LiveKit tells it so (ConnectionQualityUpdate), and the level recovers when the
// loss stops, without flapping on the way.
func TestQualityLossyDownlink(t *testing.T) {
	clean, lossy := sfutest.NewNamespace(t), sfutest.NewNamespace(t)
	e := newEnvWith(t, rtc.Config{Port: 0}) // on every interface, the two veths included
	alice := e.connectWith(t, namespaceAPI(t, clean), namespaceAPI(t, clean), "alice", true, "1")
	bob := e.connectWith(t, namespaceAPI(t, clean), namespaceAPI(t, clean), "bob", false, "1")
	carl := e.connectWith(t, namespaceAPI(t, lossy), namespaceAPI(t, lossy), "carl", false, "1")
	bob.waitMedia(alice, 50)
	carl.waitMedia(alice, 50)
	room := e.hub.Room("meet")
	level := func(identity string) int {
		if p := room.Participant(identity); p != nil {
			_, down := p.Quality()
			return down
		}
		return -1
	}
	sfutest.WaitFor(t, "both subscribers rated excellent on clean links", 15*time.Second, func() bool {
		return level("bob") == sfu.QualityExcellent && level("carl") == sfu.QualityExcellent
	})

	lossy.SetLoss(t, 8)
	sfutest.WaitFor(t, "carl's downlink rated poor or worse", 30*time.Second, func() bool {
		return level("carl") >= sfu.QualityPoor
	})
	carlSID := carl.sid()
	carl.waitFor("a ConnectionQualityUpdate rating carl poor", func(m *lkp.SignalResponse) bool {
		for _, u := range m.GetConnectionQuality().GetUpdates() {
			if u.GetParticipantSid() == carlSID && u.GetQuality() == lkp.ConnectionQuality_POOR {
				return true
			}
		}
		return false
	})
	time.Sleep(10 * time.Second) // the loss goes on: the level holds
	if l := level("bob"); l != sfu.QualityExcellent {
		t.Errorf("bob's clean downlink rated %d during carl's loss, want %d", l, sfu.QualityExcellent)
	}
	if l := level("carl"); l < sfu.QualityPoor {
		t.Errorf("carl's lossy downlink rated %d after 10 s more of loss, want %d or worse", l, sfu.QualityPoor)
	}

	lossy.SetLoss(t, 0)
	sfutest.WaitFor(t, "carl's downlink to recover", 20*time.Second, func() bool {
		return level("carl") <= sfu.QualityGood
	})
	time.Sleep(3 * time.Second)
	levels := e.downlinks("carl")
	t.Logf("carl's downlink levels: %v; bob's: %v", levels, e.downlinks("bob"))
	// Up to the worst level and back: a level that comes back after another, before the
	// recovery, is flapping.
	if len(levels) > 5 {
		t.Errorf("carl's downlink changed %d times (%v): flapping", len(levels), levels)
	}
	peak := 0
	for i, l := range levels {
		if l > levels[max(i-1, 0)] && peak > l {
			t.Errorf("carl's downlink levels %v go back up after falling: flapping", levels)
		}
		peak = max(peak, l)
	}
	if b := e.downlinks("bob"); len(b) != 1 || b[0] != sfu.QualityExcellent {
		t.Errorf("bob's downlink levels %v, want one excellent", b)
	}
}
