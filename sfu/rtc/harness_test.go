package rtc

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/auth"
)

// harness is a daemon core on loopback: hub, WebRTC engine and server, HTTP API.
type harness struct {
	t      testing.TB
	hub    *sfu.Hub
	events *sfu.LocalEmitter
	engine *Engine
	srv    *Server
	http   *httptest.Server
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newHarness(t testing.TB, authCfg auth.Config) *harness {
	t.Helper()
	return newHarnessWith(t, authCfg, nil)
}

// newHarnessWith lets a test adjust the hub's options.
func newHarnessWith(t testing.TB, authCfg auth.Config, adjust func(*sfu.Options)) *harness {
	t.Helper()
	return newHarnessLogged(t, authCfg, adjust, Config{Port: 0, BindIP: "127.0.0.1", ICETCP: true}, nil)
}

// newHarnessLogged builds the harness with an engine config and a logger for engine and server.
func newHarnessLogged(t testing.TB, authCfg auth.Config, adjust func(*sfu.Options), cfg Config, log *slog.Logger) *harness {
	t.Helper()
	em := sfu.NewLocalEmitter(0, nil)
	opts := sfu.Options{Config: sfu.DefaultConfig(), Emitter: em, Tick: 50 * time.Millisecond}
	if adjust != nil {
		adjust(&opts)
	}
	hub, err := sfu.NewHub(opts)
	if err != nil {
		t.Fatal(err)
	}
	engine, err := NewEngine(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	gate := api.NewGate(auth.NewVerifier(authCfg, nil), em)
	srv := NewServer(engine, hub, gate, log)
	a := api.New(api.Options{Hub: hub, Gate: gate})
	srv.Register(a)
	h := &harness{t: t, hub: hub, events: em, engine: engine, srv: srv, http: httptest.NewServer(a.Handler())}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.wg.Add(2)
	go func() { defer h.wg.Done(); _ = hub.Run(ctx) }()
	go func() { defer h.wg.Done(); _ = srv.Run(ctx) }()
	return h
}

func (h *harness) close() {
	h.cancel()
	h.wg.Wait()
	h.http.Close()
	if err := h.engine.Close(); err != nil {
		h.t.Errorf("engine close: %v", err)
	}
}

// clientAPI is a pion stack for test peers: default codecs and interceptors, loopback only.
func clientAPI(t *testing.T) *webrtc.API {
	t.Helper()
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	api, err := LoopbackAPI(m)
	if err != nil {
		t.Fatal(err)
	}
	return api
}

// testPublisher is a pion WHIP publisher sending synthetic H.264 (a keyframe with SPS/PPS every
// 30 frames, 30 fps) and Opus (50 packets/s).
type testPublisher struct {
	pc        *webrtc.PeerConnection
	session   *Session
	video     *webrtc.TrackLocalStaticRTP
	audio     *webrtc.TrackLocalStaticRTP
	videoSent atomic.Int64
	audioSent atomic.Int64
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func publish(t *testing.T, api *webrtc.API, endpoint, token string) *testPublisher {
	t.Helper()
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	video, _ := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"}, "video", "pub")
	audio, _ := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "pub")
	for _, tr := range []webrtc.TrackLocal{video, audio} {
		sender, err := pc.AddTrack(tr)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			buf := make([]byte, 1500)
			for {
				if _, _, err := sender.Read(buf); err != nil {
					return
				}
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := Negotiate(ctx, endpoint, token, pc)
	if err != nil {
		_ = pc.Close()
		t.Fatal(err)
	}
	p := &testPublisher{pc: pc, session: sess, video: video, audio: audio, stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

func (p *testPublisher) run() {
	defer close(p.done)
	videoTick := time.NewTicker(33 * time.Millisecond)
	audioTick := time.NewTicker(20 * time.Millisecond)
	defer videoTick.Stop()
	defer audioTick.Stop()
	var vseq, aseq uint16
	frame := 0
	for {
		select {
		case <-p.stop:
			return
		case <-videoTick.C:
			for _, pkt := range h264Frame(frame, &vseq) {
				if err := p.video.WriteRTP(pkt); err == nil {
					p.videoSent.Add(1)
				}
			}
			frame++
		case <-audioTick.C:
			pkt := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: aseq, Timestamp: uint32(aseq) * 960, Marker: aseq == 0}, Payload: make([]byte, 80)}
			aseq++
			if err := p.audio.WriteRTP(pkt); err == nil {
				p.audioSent.Add(1)
			}
		}
	}
}

// h264Frame returns the RTP packets of frame n: every 30th is SPS+PPS (STAP-A) and an IDR in
// three FU-A fragments, the others one non-IDR slice.
func h264Frame(n int, seq *uint16) []*rtp.Packet {
	ts := uint32(n * 3000)
	mk := func(payload []byte, marker bool) *rtp.Packet {
		p := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: *seq, Timestamp: ts, Marker: marker}, Payload: payload}
		*seq++
		return p
	}
	if n%30 != 0 {
		body := make([]byte, 700)
		body[0] = 0x41
		return []*rtp.Packet{mk(body, true)}
	}
	stap := []byte{0x78, 0, 4, 0x67, 0x42, 0xe0, 0x1f, 0, 3, 0x68, 0xce, 0x3c}
	out := []*rtp.Packet{mk(stap, false)}
	for i := range 3 {
		fu := make([]byte, 1000)
		fu[0], fu[1] = 0x7c, 0x05
		if i == 0 {
			fu[1] |= 0x80
		}
		if i == 2 {
			fu[1] |= 0x40
		}
		out = append(out, mk(fu, i == 2))
	}
	return out
}

func (p *testPublisher) close() {
	p.closeOnce.Do(func() {
		close(p.stop)
		<-p.done
		_ = p.session.Close(context.Background())
		_ = p.pc.Close()
	})
}

// testViewer is a pion WHEP viewer counting what it receives.
type testViewer struct {
	pc            *webrtc.PeerConnection
	session       *Session
	video, audio  atomic.Int64
	firstKeyframe atomic.Int32 // 1: the first video packet started a keyframe, 2: it did not
	readers       sync.WaitGroup

	seqMu            sync.Mutex
	firstSeq, maxSeq int64 // unwrapped video sequence numbers
}

// videoLoss returns the share of video packets missing between the first and the highest
// received, and how far the sequence advanced.
func (v *testViewer) videoLoss() (loss float64, span int64) {
	v.seqMu.Lock()
	defer v.seqMu.Unlock()
	span = v.maxSeq - v.firstSeq + 1
	if span <= 0 {
		return 1, 0
	}
	return 1 - float64(v.video.Load())/float64(span), span
}

func play(t *testing.T, api *webrtc.API, endpoint, token string, read bool) *testViewer {
	t.Helper()
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	v := &testViewer{pc: pc}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if !read {
			return // a viewer that stopped reading
		}
		v.readers.Add(1)
		defer v.readers.Done()
		for {
			pkt, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			if tr.Kind() == webrtc.RTPCodecTypeVideo {
				v.seqMu.Lock()
				s := int64(pkt.SequenceNumber)
				if v.video.Load() == 0 {
					v.firstSeq, v.maxSeq = s, s
				} else {
					for s < v.maxSeq-32768 {
						s += 65536
					}
					v.maxSeq = max(v.maxSeq, s)
				}
				v.seqMu.Unlock()
				if v.video.Add(1) == 1 {
					if sfu.IsKeyframe(sfu.CodecH264, pkt.Payload) {
						v.firstKeyframe.Store(1)
					} else {
						v.firstKeyframe.Store(2)
					}
				}
			} else {
				v.audio.Add(1)
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := Negotiate(ctx, endpoint, token, pc)
	if err != nil {
		_ = pc.Close()
		t.Fatal(err)
	}
	v.session = sess
	return v
}

func (v *testViewer) close() {
	_ = v.session.Close(context.Background())
	_ = v.pc.Close()
	v.readers.Wait()
}

func waitUntil(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// seqViewer records the video sequence numbers it receives.
type seqViewer struct {
	mu      sync.Mutex
	ext     []int64 // unwrapped sequence numbers
	readers sync.WaitGroup
}

func (v *seqViewer) start(t *testing.T, api *webrtc.API) *webrtc.PeerConnection {
	t.Helper()
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		v.readers.Add(1)
		defer v.readers.Done()
		var last int64 = -1
		for {
			pkt, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			if tr.Kind() != webrtc.RTPCodecTypeVideo {
				continue
			}
			v.mu.Lock()
			s := int64(pkt.SequenceNumber)
			if last >= 0 {
				for s < last-32768 {
					s += 65536
				}
			}
			last = max(last, s)
			v.ext = append(v.ext, s)
			v.mu.Unlock()
		}
	})
	return pc
}

func (v *seqViewer) count() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.ext)
}

// jumps counts sequence numbers missing between the lowest and highest received.
func (v *seqViewer) jumps() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	seen := map[int64]bool{}
	lo, hi := v.ext[0], v.ext[0]
	for _, s := range v.ext {
		seen[s] = true
		lo, hi = min(lo, s), max(hi, s)
	}
	return int(hi-lo+1) - len(seen)
}

func (v *seqViewer) wait() { v.readers.Wait() }

// duplicates counts sequence numbers received more than once.
func (v *seqViewer) duplicates() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	seen := map[int64]bool{}
	n := 0
	for _, s := range v.ext {
		if seen[s] {
			n++
		}
		seen[s] = true
	}
	return n
}
