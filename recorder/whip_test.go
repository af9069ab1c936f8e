package recorder

import (
	"context"
	"net"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/rtc"
)

// whipServer serves WHIP into the env's hub on loopback.
func (e *env) whipServer() string {
	e.t.Helper()
	engine, err := rtc.NewEngine(rtc.Config{Port: 0, BindIP: "127.0.0.1", ICETCP: true}, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	gate := api.NewGate(auth.NewVerifier(auth.Config{}, nil), e.hub.Emitter())
	srv := rtc.NewServer(engine, e.hub, gate, nil)
	a := api.New(api.Options{Hub: e.hub, Gate: gate})
	srv.Register(a)
	e.rec.Register(a, gate)
	hs := httptest.NewServer(a.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = srv.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		wg.Wait()
		hs.Close()
		_ = engine.Close()
	})
	return hs.URL
}

// whipPublish publishes the sources over WHIP with a pion peer for d, in real time.
func whipPublish(t *testing.T, endpoint string, d time.Duration, srcs ...*avTrack) (stop func()) {
	t.Helper()
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, reg); err != nil {
		t.Fatal(err)
	}
	var s webrtc.SettingEngine
	s.SetIncludeLoopbackCandidate(true)
	s.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	s.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	s.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	wapi := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(s))
	pc, err := wapi.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	var locals []*webrtc.TrackLocalStaticRTP
	for _, src := range srcs {
		c := webrtc.RTPCodecCapability{MimeType: src.codec.MimeType(), ClockRate: src.codec.ClockRate, Channels: src.codec.Channels}
		if src.codec.Name == "H264" {
			c.SDPFmtpLine = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
		}
		tr, err := webrtc.NewTrackLocalStaticRTP(c, string(src.codec.Kind()), "pub")
		if err != nil {
			t.Fatal(err)
		}
		sender, err := pc.AddTrack(tr)
		if err != nil {
			t.Fatal(err)
		}
		go func() { // drain RTCP (PLI is ignored: the source has a keyframe every second)
			buf := make([]byte, 1500)
			for {
				if _, _, err := sender.Read(buf); err != nil {
					return
				}
			}
		}()
		locals = append(locals, tr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	sess, err := rtc.Negotiate(ctx, endpoint, "", pc)
	if err != nil {
		_ = pc.Close()
		t.Fatal(err)
	}
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		feed(t, srcs, d, quit, func(i int, pk *rtp.Packet) { _ = locals[i].WriteRTP(pk) })
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			<-done
			_ = sess.Close(context.Background())
			_ = pc.Close()
		})
	}
}
