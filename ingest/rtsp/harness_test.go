package rtsp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/media"
	"github.com/sluice-media/sluice/sfu/rtc"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// harnessOptions shape a test daemon core.
type harnessOptions struct {
	auth        auth.Config
	backoff     Backoff
	readTimeout time.Duration
	transports  []string
	dial        func(ctx context.Context, network, address string) (net.Conn, error)
}

// harness is a daemon core on loopback: hub, ingest store, the RTSP server and camera pulls,
// and WHEP on an HTTP server for pion viewers.
type harness struct {
	t      testing.TB
	hub    *sfu.Hub
	events *sfu.LocalEmitter
	store  *ingest.Store
	srv    *Server
	engine *rtc.Engine
	http   *httptest.Server
	logs   *sfutest.Buffer
	cancel context.CancelFunc
	wg     sync.WaitGroup
	rtsp   string    // host:port of the RTSP server
	udp    [2]string // host:port of the server's UDP RTP and RTCP ports
	closed bool
}

func newHarness(t testing.TB, o harnessOptions) *harness {
	t.Helper()
	logs := &sfutest.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	hub, em := sfutest.NewHub(t, log)
	store, err := ingest.Open(t.TempDir(), nil, em, log)
	if err != nil {
		t.Fatal(err)
	}
	gate := api.NewGate(auth.NewVerifier(o.auth, nil), em)
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	rtpPort, rtcpPort := sfutest.FreeUDPPair(t)
	cfg.UDPRTPListen, cfg.UDPRTCPListen = fmt.Sprintf("127.0.0.1:%d", rtpPort), fmt.Sprintf("127.0.0.1:%d", rtcpPort)
	if o.readTimeout > 0 {
		cfg.ReadTimeout = o.readTimeout
	}
	if o.transports != nil {
		cfg.Transports = o.transports
	}
	srv, err := NewServer(Options{Config: cfg, Hub: hub, Gate: gate, Ingests: store, Logger: log.With("component", "rtsp"),
		Backoff: o.backoff, Dial: o.dial})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	store.Register(ingest.TypeRTSPPull, srv.PullHandler())
	store.Register(ingest.TypeRTSPPush, srv.PushHandler())
	engine, err := rtc.NewEngine(rtc.Config{Port: 0, BindIP: "127.0.0.1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	web := rtc.NewServer(engine, hub, gate, nil)
	a := api.New(api.Options{Hub: hub, Gate: gate})
	web.Register(a)
	h := &harness{t: t, hub: hub, events: em, store: store, srv: srv, engine: engine, logs: logs,
		http: httptest.NewServer(a.Handler()), rtsp: srv.Addr().String(), udp: [2]string{cfg.UDPRTPListen, cfg.UDPRTCPListen}}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.wg.Add(3)
	go func() { defer h.wg.Done(); _ = hub.Run(ctx) }()
	go func() { defer h.wg.Done(); _ = web.Run(ctx) }()
	go func() {
		defer h.wg.Done()
		if err := srv.Run(ctx); err != nil {
			t.Errorf("rtsp server: %v", err)
		}
	}()
	t.Cleanup(func() {
		h.close()
		if t.Failed() {
			t.Logf("logs:\n%s", tailLines(logs.String(), 80))
		}
	})
	return h
}

// close stops everything in the daemon's order: sessions, then the core.
func (h *harness) close() {
	if h.closed {
		return
	}
	h.closed = true
	h.cancel()
	h.wg.Wait()
	h.http.Close()
	_ = h.engine.Close()
}

func tailLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// pull creates a camera ingest as the API would.
func (h *harness) pull(url, transport string) ingest.Ingest {
	h.t.Helper()
	ing, err := h.store.Create(ingest.Definition{Type: ingest.TypeRTSPPull, Room: "cams", URL: url, Transport: transport}, time.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	return ing
}

// waitEvent waits for an event after seq that match accepts and returns it.
func (h *harness) waitEvent(what string, since uint64, d time.Duration, match func(sfu.Event) bool) sfu.Event {
	h.t.Helper()
	deadline := time.Now().Add(d)
	for {
		for _, e := range h.events.Events(since) {
			if match(e) {
				return e
			}
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out after %v waiting for %s; events: %v", d, what, eventSummary(h.events.Events(since)))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *harness) lastSeq() uint64 {
	evs := h.events.Events(0)
	if len(evs) == 0 {
		return 0
	}
	return evs[len(evs)-1].Seq
}

func eventSummary(evs []sfu.Event) []string {
	out := make([]string, 0, len(evs))
	for _, e := range evs {
		s := e.Type
		if e.Ingest != nil {
			s += "(" + e.PrevState + "->" + e.Ingest.State + ")"
		}
		if e.Reason != "" {
			s += "[" + e.Reason + "]"
		}
		out = append(out, s)
	}
	return out
}

func stateChanged(id, state string) func(sfu.Event) bool {
	return func(e sfu.Event) bool {
		return e.Type == sfu.EventIngestStateChanged && e.Ingest != nil && e.Ingest.ID == id && e.Ingest.State == state
	}
}

// participant returns the room's participant with that identity, or nil.
func (h *harness) participant(room, identity string) *sfu.Participant {
	r := h.hub.Room(room)
	if r == nil {
		return nil
	}
	return r.Participant(identity)
}

// packetSink records what a subscription delivers.
type packetSink struct {
	mu   sync.Mutex
	pkts []*sfu.Packet
}

func (s *packetSink) WritePacket(p *sfu.Packet, _ bool) error {
	s.mu.Lock()
	s.pkts = append(s.pkts, p)
	s.mu.Unlock()
	return nil
}

func (s *packetSink) all() []*sfu.Packet {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*sfu.Packet(nil), s.pkts...)
}

// clientAPI is a pion stack for test viewers: default codecs and interceptors, loopback only.
func clientAPI(t *testing.T) *webrtc.API {
	t.Helper()
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	api, err := rtc.LoopbackAPI(m)
	if err != nil {
		t.Fatal(err)
	}
	return api
}

// whepViewer is a pion WHEP viewer counting what it receives.
type whepViewer struct {
	pc            *webrtc.PeerConnection
	session       *rtc.Session
	video, audio  atomic.Int64
	firstKeyframe atomic.Int32 // 1: the first video packet started a keyframe, 2: it did not
	maxPayload    atomic.Int64
	videoMime     atomic.Value
	audioMime     atomic.Value
	readers       sync.WaitGroup
}

func playWHEP(t *testing.T, endpoint string) *whepViewer {
	t.Helper()
	pc, err := clientAPI(t).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	v := &whepViewer{pc: pc}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		v.readers.Add(1)
		defer v.readers.Done()
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			v.videoMime.Store(tr.Codec().MimeType)
		} else {
			v.audioMime.Store(tr.Codec().MimeType)
		}
		for {
			pkt, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			if int64(len(pkt.Payload)) > v.maxPayload.Load() {
				v.maxPayload.Store(int64(len(pkt.Payload)))
			}
			if tr.Kind() == webrtc.RTPCodecTypeVideo {
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
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	sess, err := rtc.Negotiate(ctx, endpoint, "", pc)
	if err != nil {
		_ = pc.Close()
		t.Fatal(err)
	}
	v.session = sess
	t.Cleanup(v.close)
	return v
}

func (v *whepViewer) close() {
	if v.session != nil {
		_ = v.session.Close(context.Background())
	}
	_ = v.pc.Close()
	v.readers.Wait()
}

// maxPayloadOK reports whether every packet fits the WebRTC MTU budget of media.Writer.
func (v *whepViewer) maxPayloadOK() bool { return v.maxPayload.Load() <= media.MaxPayload }

// rtspPlayer is a gortsplib client playing from the server (an NVR, VLC).
type rtspPlayer struct {
	c             *gortsplib.Client
	desc          *description.Session
	video, audio  atomic.Int64
	firstKeyframe atomic.Int32 // 1: the first video packet started a keyframe, 2: it did not
	mu            sync.Mutex
	seqs          []uint16 // video sequence numbers
	videoSSRC     uint32
	videoMedia    *description.Media
}

func playRTSP(t *testing.T, rawURL, transport string) *rtspPlayer {
	t.Helper()
	u, err := base.ParseURL(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	pl := &rtspPlayer{c: &gortsplib.Client{Scheme: u.Scheme, Host: u.Host, Transport: clientTransport(transport)}}
	if err := pl.c.Start2(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pl.c.Close)
	desc, _, err := pl.c.Describe(u)
	if err != nil {
		t.Fatalf("describe %s: %v", rawURL, err)
	}
	pl.desc = desc
	if err := pl.c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		t.Fatal(err)
	}
	pl.c.OnPacketRTPAny(func(m *description.Media, f format.Format, pkt *rtp.Packet) {
		if m.Type != description.MediaTypeVideo {
			pl.audio.Add(1)
			return
		}
		if pl.video.Add(1) == 1 {
			if sfu.IsKeyframe(sfu.CodecH264, pkt.Payload) {
				pl.firstKeyframe.Store(1)
			} else {
				pl.firstKeyframe.Store(2)
			}
		}
		pl.mu.Lock()
		pl.seqs = append(pl.seqs, pkt.SequenceNumber)
		pl.videoSSRC, pl.videoMedia = pkt.SSRC, m
		pl.mu.Unlock()
	})
	if _, err := pl.c.Play(nil); err != nil {
		t.Fatal(err)
	}
	return pl
}

// report sends a receiver report about the video with these figures (gortsplib's own go out
// over UDP only, every 5 s).
func (pl *rtspPlayer) report(t *testing.T, lost, jitter uint32) {
	t.Helper()
	pl.mu.Lock()
	ssrc, m := pl.videoSSRC, pl.videoMedia
	pl.mu.Unlock()
	rr := &rtcp.ReceiverReport{SSRC: 1, Reports: []rtcp.ReceptionReport{{SSRC: ssrc, TotalLost: lost, Jitter: jitter}}}
	if err := pl.c.WritePacketRTCP(m, rr); err != nil {
		t.Fatal(err)
	}
}

// seqJumps counts video packets whose sequence number is not the previous one plus one.
func (pl *rtspPlayer) seqJumps() int {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return sfutest.SeqJumps(pl.seqs)
}
