package rtc

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/srtp/v3"
	"github.com/pion/transport/v4/test"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
)

// srViewer is a pion WHEP viewer that counts media and keeps the sender reports it gets.
type srViewer struct {
	mu       sync.Mutex
	packets  map[uint32]int    // per SSRC
	lastTS   map[uint32]uint32 // latest RTP timestamp per SSRC
	reports  []rtcp.SenderReport
	clock    map[uint32]uint32 // clock rate per SSRC
	readers  sync.WaitGroup
	received map[uint32]time.Time
}

func newSRViewer(t *testing.T, network webrtc.NetworkType) (*srViewer, *webrtc.PeerConnection) {
	t.Helper()
	pc, err := bareAPI(t, network, nil).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	v := &srViewer{packets: map[uint32]int{}, lastTS: map[uint32]uint32{}, clock: map[uint32]uint32{}, received: map[uint32]time.Time{}}
	pc.OnTrack(func(tr *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
		v.readers.Add(2)
		go func() {
			defer v.readers.Done()
			for {
				pkts, _, err := recv.ReadRTCP()
				if err != nil {
					return
				}
				for _, p := range pkts {
					if sr, ok := p.(*rtcp.SenderReport); ok {
						v.mu.Lock()
						v.reports = append(v.reports, *sr)
						v.mu.Unlock()
					}
				}
			}
		}()
		defer v.readers.Done()
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			v.mu.Lock()
			v.packets[p.SSRC]++
			v.lastTS[p.SSRC] = p.Timestamp
			v.clock[p.SSRC] = tr.Codec().ClockRate
			v.received[p.SSRC] = time.Now()
			v.mu.Unlock()
		}
	})
	return v, pc
}

// viewerTracks returns the down tracks of the server's WHEP sessions.
func viewerTracks(h *harness) []*DownTrack {
	h.srv.mu.Lock()
	defer h.srv.mu.Unlock()
	var dts []*DownTrack
	for _, ss := range h.srv.sessions {
		if v, ok := ss.(*viewer); ok {
			for _, sl := range v.slots {
				dts = append(dts, sl.dt)
			}
		}
	}
	return dts
}

// A UDP viewer's media leaves on the direct route (our SRTP, below pion) and decrypts at a
// standard pion receiver; an ICE-TCP viewer's goes through pion. Both get sender reports whose
// counts and RTP time match what they received.
func TestDirectRouteAndSenderReports(t *testing.T) {
	for _, tc := range []struct {
		name    string
		network webrtc.NetworkType
		direct  bool
	}{
		{"udp", webrtc.NetworkTypeUDP4, true},
		{"ice-tcp", webrtc.NetworkTypeTCP4, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer test.CheckRoutines(t)()
			h := newHarness(t, auth.Config{})
			defer h.close()
			pub := publish(t, clientAPI(t), h.http.URL+"/whip/direct", "")
			defer pub.close()
			waitUntil(t, "publisher", 10*time.Second, func() bool {
				r := h.hub.Room("direct")
				return r != nil && r.MainPublisher() != nil && len(r.MainPublisher().Tracks()) == 2
			})
			v, pc := newSRViewer(t, tc.network)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			sess, err := Negotiate(ctx, h.http.URL+"/whep/direct", "", pc)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = sess.Close(context.Background()); _ = pc.Close(); v.readers.Wait() }()

			waitUntil(t, "media and two sender reports per track", 20*time.Second, func() bool {
				v.mu.Lock()
				defer v.mu.Unlock()
				per := map[uint32]int{}
				for _, sr := range v.reports {
					per[sr.SSRC]++
				}
				for ssrc := range v.packets {
					if per[ssrc] < 2 {
						return false
					}
				}
				return len(v.packets) == 2
			})
			dts := viewerTracks(h)
			if len(dts) != 2 {
				t.Fatalf("%d down tracks on the server, want 2", len(dts))
			}
			if tc.direct {
				// The viewer's pion prefers AES-256-GCM; answering as the DTLS server we pick 128.
				if got := srtpProfileOf(t, pc); got != "SRTP_AEAD_AES_128_GCM" {
					t.Errorf("SRTP profile %s, want SRTP_AEAD_AES_128_GCM", got)
				}
			}
			for _, dt := range dts {
				if got := dt.route.Load() != nil && dt.Sent() > 0; got != tc.direct {
					t.Errorf("%s track: %d packets sent, direct route %v; want direct %v (a pion upgrade may have changed DTLSTransport.conn: see srtpKeys)",
						dt.Kind(), dt.Sent(), dt.route.Load() != nil, tc.direct)
				}
			}
			v.mu.Lock()
			defer v.mu.Unlock()
			for ssrc, n := range v.packets {
				var last *rtcp.SenderReport
				for i := range v.reports {
					if v.reports[i].SSRC == ssrc {
						last = &v.reports[i]
					}
				}
				if last == nil {
					t.Fatalf("no sender report for SSRC %d", ssrc)
				}
				// The report counts what was sent up to it: at most what arrived since, and
				// not far behind (the publisher sends ≤ 100 packets a second).
				if int(last.PacketCount) > n || int(last.PacketCount) < n-300 || last.PacketCount == 0 {
					t.Errorf("SSRC %d: sender report counts %d packets, the viewer received %d", ssrc, last.PacketCount, n)
				}
				if last.OctetCount == 0 {
					t.Errorf("SSRC %d: sender report counts no octets", ssrc)
				}
				// Its RTP time is the media clock at the report's wall time: within 3 s of the
				// latest timestamp received (reports come every second).
				diff := int32(v.lastTS[ssrc] - last.RTPTime)
				if lim := int32(3 * v.clock[ssrc]); diff > lim || diff < -lim {
					t.Errorf("SSRC %d: sender report RTP time %d is %d ticks from the latest received %d", ssrc, last.RTPTime, diff, v.lastTS[ssrc])
				}
				if age := time.Since(ntpTime(last.NTPTime)); age < -time.Second || age > 5*time.Second {
					t.Errorf("SSRC %d: sender report NTP time is %v old", ssrc, age)
				}
			}
		})
	}
}

func TestNTPRoundTrip(t *testing.T) {
	now := time.Unix(1795000000, 123456789)
	if got := ntpTime(sfu.NTPTime(now)); got.Sub(now).Abs() > time.Microsecond {
		t.Fatalf("%v -> %x -> %v", now, sfu.NTPTime(now), got)
	}
}

// The direct route's cost per packet and viewer: rewrite, marshal, AES-GCM, queue on the socket.
// The flusher's sendmmsg (BenchmarkBatchConn) runs off the clock. It allocates nothing.
func BenchmarkDownTrackDirect(b *testing.B) {
	bc := loopbackBatchConn(b)
	rx := loopbackUDP(b)
	go func() {
		buf := make([]byte, 2000)
		for {
			if _, err := rx.Read(buf); err != nil {
				return
			}
		}
	}()
	ctx, err := srtp.CreateContext(make([]byte, 16), make([]byte, 12), srtp.ProtectionProfileAeadAes128Gcm)
	if err != nil {
		b.Fatal(err)
	}
	dt := NewDownTrack(sfu.Codec{Name: sfu.CodecH264, ClockRate: 90000}, "video", "s")
	dt.binding.Store(&binding{ssrc: 1234, pt: 106})
	dt.setRoute(&directRoute{conn: bc, addr: rx.LocalAddr().(*net.UDPAddr).AddrPort(), srtp: ctx})
	p := &sfu.Packet{Payload: make([]byte, 1180), Arrival: time.Now().UnixNano()}
	p.Header.Version = 2
	b.SetBytes(int64(len(p.Payload)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		p.Header.SequenceNumber = uint16(i)
		p.Header.Timestamp = uint32(i / 10 * 3000)
		if err := dt.WritePacket(p, false); err != nil {
			b.Fatal(err)
		}
		i++
		if i%1024 == 0 { // let the flusher send, off the clock: this measures the writer
			b.StopTimer()
			for bc.sent.Load()+bc.dropped.Load() < uint64(i) {
				time.Sleep(50 * time.Microsecond)
			}
			b.StartTimer()
		}
	}
}

// srtpProfileOf returns the SRTP profile pc's DTLS transport negotiated, by name.
func srtpProfileOf(t *testing.T, pc *webrtc.PeerConnection) string {
	t.Helper()
	_, _, profile, err := srtpKeys(pc.SCTP().Transport(), dtlsClient(pc))
	if err != nil {
		t.Fatal(err)
	}
	names := map[srtp.ProtectionProfile]string{
		srtp.ProtectionProfileAeadAes128Gcm: "SRTP_AEAD_AES_128_GCM",
		srtp.ProtectionProfileAeadAes256Gcm: "SRTP_AEAD_AES_256_GCM",
	}
	if n, ok := names[profile]; ok {
		return n
	}
	return fmt.Sprint(profile)
}

// bareAPI is a loopback pion client without interceptors on network, adjusted by adjust.
func bareAPI(t *testing.T, network webrtc.NetworkType, adjust func(*webrtc.SettingEngine)) *webrtc.API {
	t.Helper()
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	var s webrtc.SettingEngine
	s.SetIncludeLoopbackCandidate(true)
	s.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	s.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	s.SetNetworkTypes([]webrtc.NetworkType{network})
	if adjust != nil {
		adjust(&s)
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(&interceptor.Registry{}), webrtc.WithSettingEngine(s))
}
