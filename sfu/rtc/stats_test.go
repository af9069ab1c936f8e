package rtc

import (
	"net"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/transport/v4/test"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
)

// dropper is a client interceptor that loses every tenth video packet for good: registered
// before pion's NACK responder, it drops the retransmissions too.
type dropper struct{ interceptor.NoOp }

func (dropper) NewInterceptor(string) (interceptor.Interceptor, error) { return &dropper{}, nil }

func (*dropper) BindLocalStream(info *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	if info.ClockRate != 90000 {
		return w
	}
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		if h.SequenceNumber%10 == 5 {
			return len(payload), nil
		}
		return w.Write(h, payload, a)
	})
}

// lossyAPI is clientAPI with a dropper under the default interceptors.
func lossyAPI(t *testing.T) *webrtc.API {
	t.Helper()
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	reg := &interceptor.Registry{}
	reg.Add(dropper{})
	if err := webrtc.RegisterDefaultInterceptors(m, reg); err != nil {
		t.Fatal(err)
	}
	var s webrtc.SettingEngine
	s.SetIncludeLoopbackCandidate(true)
	s.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	s.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	s.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(s))
}

// A WHIP publisher on a lossy path and a WHEP viewer: their stream.stats carry the figures of
// the RTCP receiver reports (packets lost, jitter) and a round trip.
func TestStreamStatsFromRTCP(t *testing.T) {
	defer test.CheckRoutines(t)()
	h := newHarnessWith(t, auth.Config{}, func(o *sfu.Options) { o.StatsInterval = 300 * time.Millisecond })
	defer h.close()

	pub := publish(t, lossyAPI(t), h.http.URL+"/whip/lobby", "")
	defer pub.close()
	waitUntil(t, "the publisher's tracks", 10*time.Second, func() bool {
		r := h.hub.Room("lobby")
		return r != nil && r.MainPublisher() != nil && len(r.MainPublisher().Tracks()) == 2
	})
	viewer := play(t, clientAPI(t), h.http.URL+"/whep/lobby", "", true)
	defer viewer.close()

	// latest returns the newest stream.stats of a direction.
	latest := func(dir string) *sfu.StreamInfo {
		evs := h.events.Events(0)
		for i := len(evs) - 1; i >= 0; i-- {
			if e := evs[i]; e.Type == sfu.EventStreamStats && e.Stream.Direction == dir {
				return e.Stream
			}
		}
		return nil
	}
	complete := func(s *sfu.StreamInfo) bool {
		return s != nil && s.PacketsLost != nil && s.JitterMs != nil && s.RTTMs != nil
	}
	waitUntil(t, "the publisher's stats with loss and a round trip", 20*time.Second, func() bool {
		s := latest(sfu.DirectionPublish)
		return complete(s) && *s.PacketsLost > 0 && *s.RTTMs > 0
	})
	waitUntil(t, "the viewer's stats from its receiver reports", 20*time.Second, func() bool {
		return complete(latest(sfu.DirectionPlay))
	})
	for _, dir := range []string{sfu.DirectionPublish, sfu.DirectionPlay} {
		s := latest(dir)
		if s.Protocol != map[string]string{sfu.DirectionPublish: sfu.ProtocolWHIP, sfu.DirectionPlay: sfu.ProtocolWHEP}[dir] {
			t.Errorf("%s stats on protocol %q", dir, s.Protocol)
		}
		// Plausible on loopback: a round trip under a second, jitter under one, loss no more
		// than what was sent.
		if *s.RTTMs < 0 || *s.RTTMs > 1000 || *s.JitterMs < 0 || *s.JitterMs > 1000 || *s.PacketsLost < 0 ||
			*s.PacketsLost > pub.videoSent.Load()+pub.audioSent.Load() {
			t.Errorf("%s stats implausible: rtt %v ms, jitter %v ms, lost %d", dir, *s.RTTMs, *s.JitterMs, *s.PacketsLost)
		}
		t.Logf("%s: rtt %.3f ms, jitter %.3f ms, lost %d, %v kbit/s", dir, *s.RTTMs, *s.JitterMs, *s.PacketsLost, *s.BitrateKbps)
	}
	// A tenth of the video is lost (each 700-byte frame is one packet; a keyframe four).
	if lost, sent := *latest(sfu.DirectionPublish).PacketsLost, pub.videoSent.Load(); lost < sent/20 {
		t.Errorf("publisher lost %d of %d video packets sent, want about a tenth", lost, sent)
	}
	viewer.close()
	pub.close()
	waitUntil(t, "sessions to end", 10*time.Second, func() bool { return h.srv.Sessions() == 0 })
}
