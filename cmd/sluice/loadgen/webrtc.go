package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/cmd/sluice/clip"
	"github.com/sluice-media/sluice/sfu/rtc"
)

// loadAPI is the pion stack of the load generator's peers: NACK and RTCP reports like a
// browser, no stats or congestion control (they would cost the generator, not the daemon).
// Against a loopback daemon only loopback candidates are gathered, and with offload viewerAPI
// (nil otherwise) gives each viewer a stack of its own on a receive-offload socket (gro.go).
func loadAPI(server string, offload bool) (api *webrtc.API, viewerAPI func() (*webrtc.API, func(), error), err error) {
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		return nil, nil, err
	}
	reg := &interceptor.Registry{}
	if err := webrtc.ConfigureNack(m, reg); err != nil {
		return nil, nil, err
	}
	if err := webrtc.ConfigureRTCPReports(reg); err != nil {
		return nil, nil, err
	}
	var s webrtc.SettingEngine
	// A viewer whose session the daemon ended without a word (its DTLS close_notify lost) is
	// known as ended within 15 s, not pion's 30: media arrives all the time on a live one.
	s.SetICETimeouts(5*time.Second, 10*time.Second, time.Second)
	s.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	s.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	var loopback net.IP
	if u, err := url.Parse(server); err == nil {
		if ip := net.ParseIP(u.Hostname()); (ip != nil && ip.IsLoopback()) || u.Hostname() == "localhost" {
			s.SetIncludeLoopbackCandidate(true)
			s.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
			loopback = net.IPv4(127, 0, 0, 1)
			if ip != nil {
				loopback = ip
			}
		}
	}
	opts := []func(*webrtc.API){webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg)}
	api = webrtc.NewAPI(append(opts, webrtc.WithSettingEngine(s))...)
	if offload && loopback != nil {
		if c, err := listenGRO(loopback); err == nil { // the kernel has UDP_GRO
			_ = c.Close()
			viewerAPI = func() (*webrtc.API, func(), error) { return groViewerAPI(s, opts, loopback) }
		}
	}
	return api, viewerAPI, nil
}

// clipPublisher publishes the built-in clip over WHIP in real time, looping it.
type clipPublisher struct {
	pc      *webrtc.PeerConnection
	session *rtc.Session
	video   *webrtc.TrackLocalStaticRTP
	audio   *webrtc.TrackLocalStaticRTP
	clip    *clip.Clip
	sent    atomic.Int64
	// keyframe is set by a viewer's PLI: like an encoder, the publisher answers with a keyframe
	// (the next GOP start of the clip) at its next frame.
	keyframe atomic.Bool
}

func publishClip(ctx context.Context, api *webrtc.API, endpoint, token string) (*clipPublisher, error) {
	c, err := clip.Load(1150)
	if err != nil {
		return nil, err
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, err
	}
	p := &clipPublisher{pc: pc, clip: c}
	p.video, _ = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"}, "video", "loadtest")
	p.audio, _ = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "loadtest")
	for _, tr := range []webrtc.TrackLocal{p.video, p.audio} {
		sender, err := pc.AddTrack(tr)
		if err != nil {
			_ = pc.Close()
			return nil, err
		}
		go p.readRTCP(sender) // ends when pc closes
	}
	p.session, err = rtc.Negotiate(ctx, endpoint, token, pc)
	if err != nil {
		_ = pc.Close()
		return nil, fmt.Errorf("publishing: %w", err)
	}
	return p, nil
}

func (p *clipPublisher) readRTCP(s *webrtc.RTPSender) {
	for {
		pkts, _, err := s.ReadRTCP()
		if err != nil {
			return
		}
		for _, pk := range pkts {
			switch pk.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				p.keyframe.Store(true)
			}
		}
	}
}

// run sends the clip in real time until ctx ends: each frame's packets at once (as an encoder
// would), audio every 20 ms.
func (p *clipPublisher) run(ctx context.Context) {
	start := time.Now()
	var vseq, aseq uint16
	vi, ai := 0, 0 // frames and audio packets sent
	clipFrame := 0 // position in the clip, which a keyframe request moves
	for ctx.Err() == nil {
		vdue := start.Add(time.Duration(vi) * time.Second / 30)
		adue := start.Add(time.Duration(ai) * 20 * time.Millisecond)
		next := vdue
		if adue.Before(vdue) {
			next = adue
		}
		if d := time.Until(next); d > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
		}
		if !vdue.After(adue) {
			if p.keyframe.Swap(false) && clipFrame%clip.GOPFrames != 0 {
				clipFrame += clip.GOPFrames - clipFrame%clip.GOPFrames
			}
			f := p.clip.Video[clipFrame%len(p.clip.Video)]
			clipFrame++
			ts := uint32(vi * clip.FrameTicks)
			for _, pk := range f.Packets {
				out := &rtp.Packet{Header: pk.Header, Payload: pk.Payload}
				out.SequenceNumber, out.Timestamp = vseq, ts
				vseq++
				if p.video.WriteRTP(out) == nil {
					p.sent.Add(1)
				}
			}
			vi++
		} else {
			out := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: aseq, Timestamp: uint32(ai * clip.OpusTicks)}, Payload: p.clip.Audio[ai%len(p.clip.Audio)]}
			aseq++
			if p.audio.WriteRTP(out) == nil {
				p.sent.Add(1)
			}
			ai++
		}
	}
}

func (p *clipPublisher) close() {
	if p.session != nil {
		_ = p.session.Close(context.Background())
	}
	_ = p.pc.Close()
}

// loadSubscriber is one WHEP viewer measuring what it receives. The load test makes it, then
// one goroutine runs start; counters, result and ended are safe meanwhile (the sampler reads
// them), close runs once start has returned.
type loadSubscriber struct {
	identity string // in key mode, the token's identity (which the daemon's events name)
	pc       *webrtc.PeerConnection
	release  func() // the viewer's own socket, if any, after pc
	session  *rtc.Session
	started  time.Time
	setup    atomic.Int64 // nanoseconds from the offer to the first video packet
	answered atomic.Int64 // nanoseconds from the offer to the applied answer
	connect  atomic.Int64 // nanoseconds from the offer to ICE and DTLS connected
	failed   atomic.Bool
	// refused is set when the daemon answered the offer 503 (overloaded: admission refused).
	refused atomic.Bool
	// endedAt is when the daemon ended a session that had played (it closed the peer
	// connection, or stopped answering): the arrival of its last packet, in unix nanoseconds;
	// 0 while it plays. lastPacket is the arrival of the latest packet.
	endedAt    atomic.Int64
	lastPacket atomic.Int64
	// port is the local port of the viewer's socket once connected (0 before), which the
	// kernel's per-socket drop counters are found by.
	port     atomic.Uint32
	closing  atomic.Bool
	readers  sync.WaitGroup
	statsMu  sync.Mutex
	video    streamStats
	audio    streamStats
	lastErr  error
	firstPkt chan struct{}
	once     sync.Once
}

// streamStats counts one received RTP stream (RFC 3550 A.1 and A.8).
type streamStats struct {
	packets, bytes int64
	baseSeq        int64
	maxSeq         int64 // extended
	started        bool
	jitter         float64 // in clock units
	lastTransit    float64
	clockRate      float64
}

func (s *streamStats) add(seq uint16, ts uint32, size int, now time.Time) {
	s.packets++
	s.bytes += int64(size)
	ext := int64(seq)
	if !s.started {
		s.started, s.baseSeq, s.maxSeq = true, ext, ext
	} else {
		// Unwrap relative to the highest seen.
		for ext < s.maxSeq-32768 {
			ext += 65536
		}
		s.maxSeq = max(s.maxSeq, ext)
	}
	arrival := float64(now.UnixNano()) / 1e9 * s.clockRate
	transit := arrival - float64(ts)
	if s.packets > 1 {
		d := transit - s.lastTransit
		if d < 0 {
			d = -d
		}
		s.jitter += (d - s.jitter) / 16
	}
	s.lastTransit = transit
}

// snapshot returns packets received, packets expected and bytes so far, and jitter in ms.
func (s *streamStats) snapshot() (received, expected, bytes int64, jitterMs float64) {
	if !s.started {
		return 0, 0, 0, 0
	}
	return s.packets, s.maxSeq - s.baseSeq + 1, s.bytes, s.jitter / s.clockRate * 1000
}

func newLoadSubscriber(identity string) *loadSubscriber {
	s := &loadSubscriber{identity: identity, firstPkt: make(chan struct{})}
	s.video.clockRate, s.audio.clockRate = 90000, 48000
	return s
}

// start negotiates the session and returns; the peer connection's goroutines count what
// arrives. A refusal or a failure is recorded, not returned.
func (s *loadSubscriber) start(ctx context.Context, api *webrtc.API, release func(), endpoint, token string) {
	s.started = time.Now() // before the peer connection's goroutines, which read it
	s.release = release    // the viewer's own socket (close releases it, whatever happens here)
	fail := func(err error) {
		var refusal *rtc.StatusError
		if errors.As(err, &refusal) && refusal.Status == http.StatusServiceUnavailable {
			s.refused.Store(true)
		}
		s.failed.Store(true)
		s.statsMu.Lock()
		s.lastErr = err
		s.statsMu.Unlock()
		if s.pc != nil {
			_ = s.pc.Close()
		}
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		fail(err)
		return
	}
	s.pc = pc
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			fail(err)
			return
		}
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		s.readers.Add(1)
		defer s.readers.Done()
		st := &s.audio
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			st = &s.video
		}
		buf := make([]byte, 1500)
		for {
			n, _, err := tr.Read(buf)
			if err != nil {
				return
			}
			if n < 12 {
				continue
			}
			now := time.Now()
			s.lastPacket.Store(now.UnixNano())
			seq := uint16(buf[2])<<8 | uint16(buf[3])
			ts := uint32(buf[4])<<24 | uint32(buf[5])<<16 | uint32(buf[6])<<8 | uint32(buf[7])
			s.statsMu.Lock()
			st.add(seq, ts, n, now)
			s.statsMu.Unlock()
			if st == &s.video {
				s.once.Do(func() {
					s.setup.Store(max(1, int64(now.Sub(s.started))))
					close(s.firstPkt)
				})
			}
		}
	})
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		switch st {
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			switch {
			case s.closing.Load():
			case s.setup.Load() > 0:
				// It played, and the daemon closed it (a DTLS close_notify closes the peer
				// connection) or went silent: the session was ended from the daemon's side,
				// when its media stopped (a close_notify lost in a congested daemon's send
				// queue is noticed only as silence, seconds later).
				s.endedAt.CompareAndSwap(0, max(1, s.lastPacket.Load()))
			default:
				s.failed.Store(true)
			}
		case webrtc.PeerConnectionStateConnected:
			s.connect.CompareAndSwap(0, int64(time.Since(s.started)))
		default:
		}
	})
	session, err := rtc.Negotiate(ctx, endpoint, token, pc)
	if err != nil {
		fail(err)
		return
	}
	s.session = session
	s.answered.Store(int64(time.Since(s.started)))
}

// localPort returns the port of the viewer's socket (its selected candidate's), 0 until it is
// connected.
func (s *loadSubscriber) localPort() uint16 {
	if p := s.port.Load(); p != 0 {
		return uint16(p) //nolint:gosec // stored from a uint16
	}
	if s.connect.Load() == 0 || s.pc == nil || s.pc.SCTP() == nil {
		return 0
	}
	pair, err := s.pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil || pair.Local == nil {
		return 0
	}
	s.port.Store(uint32(pair.Local.Port))
	return pair.Local.Port
}

func (s *loadSubscriber) outcome() (refused, shed bool) {
	_, shed = s.ended()
	return s.refused.Load(), shed
}

// ended reports whether, and when, the daemon ended a session that had played.
func (s *loadSubscriber) ended() (time.Time, bool) {
	if at := s.endedAt.Load(); at != 0 {
		return time.Unix(0, at), true
	}
	return time.Time{}, false
}

func (s *loadSubscriber) counters() (video, audio [4]float64) {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return statsCounters(&s.video), statsCounters(&s.audio)
}

// statsCounters is a stream's snapshot as floats: received, expected, bytes, jitter in ms.
func statsCounters(s *streamStats) [4]float64 {
	r, e, b, j := s.snapshot()
	return [4]float64{float64(r), float64(e), float64(b), j}
}

func (s *loadSubscriber) result() (setupNs int64, failed bool, err error) {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.setup.Load(), s.failed.Load(), s.lastErr
}

func (s *loadSubscriber) close() {
	s.closing.Store(true)
	if s.session != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = s.session.Close(ctx)
		cancel()
	}
	if s.pc != nil {
		_ = s.pc.Close()
	}
	s.readers.Wait()
	if s.release != nil {
		s.release()
	}
}
