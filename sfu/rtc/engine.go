// Package rtc is the WebRTC edge of the SFU: WHIP publish (RFC 9725) and WHEP play sessions
// on one pion engine, with every session's media on one UDP port (ICE mux) and ICE-TCP on the
// same number.
package rtc

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// Engine is the daemon's one WebRTC stack: the pion API with our codecs and interceptors, and
// the shared UDP and TCP sockets. NewEngine opens the sockets; Close releases them.
type Engine struct {
	api *webrtc.API
	// viewAPI makes WHEP viewers' connections: no interceptors (retransmissions, sender
	// reports and the media itself are ours, egress.go) and no transport-cc, which only a
	// sender's bandwidth estimation reads and ours does none.
	viewAPI *webrtc.API
	// taps read the receiver reports of the publishers' connections (stats.go).
	taps *reportTaps
	// levels read the audio levels publishers put on their audio (audiolevel.go).
	levels *levelTaps
	udp    net.PacketConn
	conns  []*batchConn // every media socket
	tcp    net.Listener
	udpMux ice.UDPMux
	// localAddr is what LocalAddr reports when there is no single socket.
	localAddr net.Addr
	tcpMux    ice.TCPMux
	cfg       Config
	log       *slog.Logger

	routedDirect, routedPion atomic.Uint64 // WHEP viewers by route (egress.go)
	pionWarnings             atomic.Uint64 // pion's warnings, logged at debug (logger.go)
	iceConfs                 []webrtc.ICEServer
}

// NewEngine builds the WebRTC stack for cfg and binds its port. With Port 0 the system picks a
// UDP port and ICE-TCP takes the same number; if that TCP port is taken, another pair is tried.
func NewEngine(cfg Config, log *slog.Logger) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		e, err := newEngine(cfg, log)
		var inUse *tcpInUseError
		if cfg.Port == 0 && attempt < 20 && errors.As(err, &inUse) {
			continue
		}
		return e, err
	}
}

// tcpInUseError is an ICE-TCP bind failure on the port the UDP socket got.
type tcpInUseError struct{ err error }

func (e *tcpInUseError) Error() string { return e.err.Error() }
func (e *tcpInUseError) Unwrap() error { return e.err }

func newEngine(cfg Config, log *slog.Logger) (*Engine, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Engine{cfg: cfg, log: log}
	lf := &loggerFactory{log: log, warnings: &e.pionWarnings}

	addr := net.JoinHostPort(cfg.BindIP, strconv.Itoa(cfg.Port))
	var port int
	if cfg.BindIP != "" {
		udp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(mustAddr(cfg.BindIP), uint16(cfg.Port))))
		if err != nil {
			return nil, fmt.Errorf("webrtc udp %s: %w", addr, err)
		}
		bc, err := newBatchConn(udp)
		if err != nil {
			_ = udp.Close()
			return nil, fmt.Errorf("webrtc udp %s: %w", addr, err)
		}
		e.udp, e.conns = bc, []*batchConn{bc}
		e.udpMux = webrtc.NewICEUDPMux(lf.NewLogger("udpmux"), bc)
		port = udp.LocalAddr().(*net.UDPAddr).Port
	} else {
		// One socket per local address on the same port, so that each host candidate is the
		// address the packets really leave from.
		mux, conns, err := multiMux(cfg.Port, lf)
		if err != nil {
			return nil, fmt.Errorf("webrtc udp %s: %w", addr, err)
		}
		e.udpMux, e.conns = mux, conns
		e.localAddr = conns[0].LocalAddr()
		port = conns[0].LocalAddr().(*net.UDPAddr).Port
	}

	var s webrtc.SettingEngine
	s.LoggerFactory = lf
	s.SetICEUDPMux(e.udpMux)
	s.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled) // never multicast
	s.DisableActiveTCP(true)
	networks := []webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6}
	if cfg.ICETCP {
		// Same number as the UDP port (which Port 0 lets the system pick).
		tcpAddr := net.JoinHostPort(cfg.BindIP, strconv.Itoa(port))
		tcp, err := net.Listen("tcp", tcpAddr)
		if err != nil {
			_ = e.Close()
			return nil, &tcpInUseError{fmt.Errorf("webrtc ice-tcp %s: %w", tcpAddr, err)}
		}
		e.tcp = tcp
		e.tcpMux = webrtc.NewICETCPMux(lf.NewLogger("tcpmux"), tcp, 8)
		s.SetICETCPMux(e.tcpMux)
		networks = append(networks, webrtc.NetworkTypeTCP4, webrtc.NetworkTypeTCP6)
	}
	s.SetNetworkTypes(networks)
	if cfg.BindIP != "" {
		bind := net.ParseIP(cfg.BindIP)
		s.SetIPFilter(func(ip net.IP) bool { return ip.Equal(bind) })
		if bind.IsLoopback() {
			s.SetIncludeLoopbackCandidate(true)
		}
	}
	if len(cfg.PublicIPs) > 0 {
		if err := s.SetICEAddressRewriteRules(webrtc.ICEAddressRewriteRule{
			External:        cfg.PublicIPs,
			AsCandidateType: webrtc.ICECandidateTypeHost,
			Mode:            webrtc.ICEAddressRewriteReplace,
		}); err != nil {
			_ = e.Close()
			return nil, fmt.Errorf("webrtc public_ips: %w", err)
		}
	}

	m := &webrtc.MediaEngine{}
	if err := registerCodecs(m); err != nil {
		_ = e.Close()
		return nil, err
	}
	if err := registerAudioLevel(m); err != nil {
		_ = e.Close()
		return nil, err
	}
	reg := &interceptor.Registry{}
	// First, so that the report interceptor's receiver reports pass through it (stats.go).
	e.taps = &reportTaps{}
	reg.Add(e.taps)
	// NACKs from publishers come from pion's generator. Retransmissions to viewers are ours
	// (DownTrack keeps pointers to the shared packets): pion's responder would copy every
	// packet for every viewer.
	gen, err := nack.NewGeneratorInterceptor()
	if err != nil {
		_ = e.Close()
		return nil, err
	}
	reg.Add(gen)
	e.levels = &levelTaps{}
	reg.Add(e.levels)
	if err := webrtc.ConfigureRTCPReports(reg); err != nil {
		_ = e.Close()
		return nil, err
	}
	if err := webrtc.ConfigureTWCCSender(m, reg); err != nil {
		_ = e.Close()
		return nil, err
	}
	e.api = webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(s))
	vm := &webrtc.MediaEngine{}
	if err := registerCodecs(vm); err != nil {
		_ = e.Close()
		return nil, err
	}
	// Viewers' connections answer as the DTLS server, so that the SRTP profile is ours to pick:
	// AES-128-GCM first (every browser has it; a quarter cheaper per packet than AES-256).
	vs := s
	if err := vs.SetAnsweringDTLSRole(webrtc.DTLSRoleServer); err != nil {
		_ = e.Close()
		return nil, err
	}
	vs.SetSRTPProtectionProfiles(dtls.SRTP_AEAD_AES_128_GCM, dtls.SRTP_AEAD_AES_256_GCM, dtls.SRTP_AES128_CM_HMAC_SHA1_80)
	e.viewAPI = webrtc.NewAPI(webrtc.WithMediaEngine(vm), webrtc.WithInterceptorRegistry(&interceptor.Registry{}), webrtc.WithSettingEngine(vs))
	for _, srv := range cfg.ICEServers {
		e.iceConfs = append(e.iceConfs, webrtc.ICEServer{URLs: srv.URLs, Username: srv.Username, Credential: srv.Credential})
	}
	return e, nil
}

// LocalAddr returns the bound UDP address (useful when Port was 0 in tests).
func (e *Engine) LocalAddr() net.Addr {
	if e.udp != nil {
		return e.udp.LocalAddr()
	}
	return e.localAddr
}

// mustAddr parses an IP validated by Config.Validate.
func mustAddr(ip string) netip.Addr {
	a, _ := netip.ParseAddr(ip)
	return a.Unmap()
}

// multiMux binds port on every up, non-loopback unicast address (the first bind picks the
// number when port is 0) and muxes them, like ice.NewMultiUDPMuxFromPort but on batching
// sockets.
func multiMux(port int, lf *loggerFactory) (*ice.MultiUDPMuxDefault, []*batchConn, error) {
	ips, err := localIPs()
	if err != nil {
		return nil, nil, err
	}
	var conns []*batchConn
	fail := func(err error) (*ice.MultiUDPMuxDefault, []*batchConn, error) {
		for _, c := range conns {
			_ = c.Close()
		}
		return nil, nil, err
	}
	var muxes []ice.UDPMux
	for _, ip := range ips {
		udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: port})
		if err != nil {
			return fail(err)
		}
		port = udp.LocalAddr().(*net.UDPAddr).Port
		bc, err := newBatchConn(udp)
		if err != nil {
			_ = udp.Close()
			return fail(err)
		}
		conns = append(conns, bc)
		muxes = append(muxes, ice.NewUDPMuxDefault(ice.UDPMuxParams{Logger: lf.NewLogger("udpmux"), UDPConn: bc}))
	}
	if len(muxes) == 0 {
		return fail(errors.New("no usable network address: set webrtc.bind_ip"))
	}
	return ice.NewMultiUDPMuxDefault(muxes...), conns, nil
}

// localIPs returns the unicast addresses of the interfaces that are up, loopback excluded.
func localIPs() ([]net.IP, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	var out []net.IP
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || !ipn.IP.IsGlobalUnicast() && !ipn.IP.IsPrivate() {
				continue
			}
			if ipn.IP.To4() == nil && ipn.IP.IsLinkLocalUnicast() {
				continue
			}
			out = append(out, ipn.IP)
		}
	}
	return out, nil
}

// SentPackets returns packets written to the network, the sendmmsg calls that carried them,
// and packets dropped because the socket could not take them.
func (e *Engine) SentPackets() (sent, syscalls, dropped uint64) {
	for _, c := range e.conns {
		sent += c.sent.Load()
		syscalls += c.syscalls.Load()
		dropped += c.dropped.Load()
	}
	return sent, syscalls, dropped
}

// newPeerConnection makes a publisher's connection, or with view a viewer's, on the shared
// sockets. Clients get the ICE servers through Link headers; the daemon itself needs none: it
// is the reachable side.
func (e *Engine) newPeerConnection(view bool) (*webrtc.PeerConnection, error) {
	if view {
		return e.viewAPI.NewPeerConnection(webrtc.Configuration{})
	}
	return e.api.NewPeerConnection(webrtc.Configuration{})
}

// NewPeerConnection makes a peer connection for a signalling session (sfu/livekit) on the
// shared sockets, with the publishers' API: our codecs, NACK generation, RTCP reports and
// transport-cc. The caller closes it.
func (e *Engine) NewPeerConnection() (*webrtc.PeerConnection, error) {
	return e.newPeerConnection(false)
}

// ICEServers returns the configured STUN/TURN servers, for clients that learn them through
// signalling rather than Link headers.
func (e *Engine) ICEServers() []webrtc.ICEServer {
	return append([]webrtc.ICEServer(nil), e.iceConfs...)
}

// Close releases the shared sockets. Idempotent.
func (e *Engine) Close() error {
	var errs []error
	if e.udpMux != nil {
		errs = append(errs, e.udpMux.Close())
		e.udpMux = nil
	} else if e.udp != nil {
		errs = append(errs, e.udp.Close())
	}
	e.udp = nil
	if e.tcpMux != nil {
		errs = append(errs, closeWithin(e.tcpMux, tcpMuxCloseWait, e.log))
		e.tcpMux = nil
	} else if e.tcp != nil {
		errs = append(errs, e.tcp.Close())
	}
	e.tcp = nil
	for _, c := range e.conns {
		errs = append(errs, c.Close()) // idempotent: the mux closed them already
	}
	return errors.Join(errs...)
}

var (
	descSent     = prometheus.NewDesc("sluice_webrtc_packets_sent_total", "UDP packets sent by WebRTC sessions.", nil, nil)
	descSyscalls = prometheus.NewDesc("sluice_webrtc_send_syscalls_total", "sendmmsg calls carrying them.", nil, nil)
	descDropped  = prometheus.NewDesc("sluice_webrtc_send_dropped_total", "UDP packets the socket could not take.", nil, nil)
	descPaced    = prometheus.NewDesc("sluice_webrtc_send_paced", "Media packets waiting for their viewer's pace.", nil, nil)
	descPionWarn = prometheus.NewDesc("sluice_webrtc_pion_warnings_total", "Warnings of the WebRTC stack (pion), logged at debug level.", nil, nil)
	descRoutes   = prometheus.NewDesc("sluice_webrtc_viewer_routes_total",
		"WHEP viewers by how their media left: direct (our SRTP onto the UDP socket) or pion (ICE-TCP, or keys not readable).", []string{"route"}, nil)
)

// Describe implements prometheus.Collector.
func (e *Engine) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSent
	ch <- descSyscalls
	ch <- descDropped
	ch <- descPaced
	ch <- descPionWarn
	ch <- descRoutes
}

// Collect implements prometheus.Collector.
func (e *Engine) Collect(ch chan<- prometheus.Metric) {
	sent, calls, dropped := e.SentPackets()
	ch <- prometheus.MustNewConstMetric(descSent, prometheus.CounterValue, float64(sent))
	ch <- prometheus.MustNewConstMetric(descSyscalls, prometheus.CounterValue, float64(calls))
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(dropped))
	var paced int64
	for _, c := range e.conns {
		paced += c.paced.Load()
	}
	ch <- prometheus.MustNewConstMetric(descPaced, prometheus.GaugeValue, float64(paced))
	ch <- prometheus.MustNewConstMetric(descPionWarn, prometheus.CounterValue, float64(e.pionWarnings.Load()))
	ch <- prometheus.MustNewConstMetric(descRoutes, prometheus.CounterValue, float64(e.routedDirect.Load()), "direct")
	ch <- prometheus.MustNewConstMetric(descRoutes, prometheus.CounterValue, float64(e.routedPion.Load()), "pion")
}

// tcpMuxCloseWait bounds the wait for pion's ICE-TCP mux to close. The mux waits for every
// connection it made; a browser that keeps sending STUN over ICE-TCP after its peer connection
// was closed (daemon shutdown) gets a new connection for the old ufrag that nothing will ever
// close (pion/ice v4.4.2), and Close would wait forever.
const tcpMuxCloseWait = 2 * time.Second

// closeWithin closes c and waits at most d for it; a close that takes longer is left to finish
// in the background (the process is shutting down) and reported.
func closeWithin(c io.Closer, d time.Duration, log *slog.Logger) error {
	done := make(chan error, 1)
	go func() { done <- c.Close() }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		log.Warn("webrtc: the ICE-TCP mux did not close in time; leaving it to the process exit", "waited", d)
		return nil
	}
}

var videoFeedback = []webrtc.RTCPFeedback{{Type: "goog-remb"}, {Type: "transport-cc"}, {Type: "ccm", Parameter: "fir"}, {Type: "nack"}, {Type: "nack", Parameter: "pli"}}

// videoCodecs in preference order: H.264 first (it goes to MP4 and RTMP unchanged), then VP8,
// VP9, AV1, H.265. Each has an RTX companion (payload type + 1) so that browsers send their
// bandwidth probes as RTX padding, which pion drops, instead of on the media SSRC.
var videoCodecs = []webrtc.RTPCodecParameters{
	h264Codec(106, "42e01f"), h264Codec(102, "42001f"), h264Codec(108, "4d001f"), h264Codec(112, "64001f"),
	{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000, RTCPFeedback: videoFeedback}, PayloadType: 96},
	{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP9, ClockRate: 90000, SDPFmtpLine: "profile-id=0", RTCPFeedback: videoFeedback}, PayloadType: 98},
	{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeAV1, ClockRate: 90000, RTCPFeedback: videoFeedback}, PayloadType: 45},
	{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH265, ClockRate: 90000, RTCPFeedback: videoFeedback}, PayloadType: 116},
}

func h264Codec(pt uint8, profile string) webrtc.RTPCodecParameters {
	return webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypeH264, ClockRate: 90000, RTCPFeedback: videoFeedback,
			SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=" + profile,
		},
		PayloadType: webrtc.PayloadType(pt),
	}
}

var audioCodecs = []webrtc.RTPCodecParameters{
	{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}, PayloadType: 111},
	{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000}, PayloadType: 0},
	{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMA, ClockRate: 8000}, PayloadType: 8},
	{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeG722, ClockRate: 8000}, PayloadType: 9},
}

func registerCodecs(m *webrtc.MediaEngine) error {
	for _, c := range videoCodecs {
		if err := m.RegisterCodec(c, webrtc.RTPCodecTypeVideo); err != nil {
			return err
		}
		rtx := webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeRTX, ClockRate: 90000, SDPFmtpLine: "apt=" + strconv.Itoa(int(c.PayloadType))},
			PayloadType:        c.PayloadType + 1,
		}
		if err := m.RegisterCodec(rtx, webrtc.RTPCodecTypeVideo); err != nil {
			return err
		}
	}
	for _, c := range audioCodecs {
		if err := m.RegisterCodec(c, webrtc.RTPCodecTypeAudio); err != nil {
			return err
		}
	}
	return nil
}
