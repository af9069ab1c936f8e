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
	"strconv"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"
)

// Engine is the daemon's one WebRTC stack: the pion API with our codecs and interceptors, and
// the shared UDP and TCP sockets. NewEngine opens the sockets; Close releases them.
type Engine struct {
	api    *webrtc.API
	udp    net.PacketConn
	tcp    net.Listener
	udpMux ice.UDPMux
	// localAddr is what LocalAddr reports when there is no single socket.
	localAddr net.Addr
	tcpMux    ice.TCPMux
	cfg       Config
	log       *slog.Logger
	iceConfs  []webrtc.ICEServer
}

// NewEngine builds the WebRTC stack for cfg and binds its port.
func NewEngine(cfg Config, log *slog.Logger) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Engine{cfg: cfg, log: log}
	lf := &loggerFactory{log: log}

	addr := net.JoinHostPort(cfg.BindIP, strconv.Itoa(cfg.Port))
	port := cfg.Port
	if cfg.BindIP != "" {
		udp, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, fmt.Errorf("webrtc udp %s: %w", addr, err)
		}
		e.udp = udp
		e.udpMux = webrtc.NewICEUDPMux(lf.NewLogger("udpmux"), udp)
		port = udp.LocalAddr().(*net.UDPAddr).Port
	} else {
		// One socket per local address on the same port, so that each host candidate is
		// the address the packets really leave from.
		mux, err := ice.NewMultiUDPMuxFromPort(cfg.Port, ice.UDPMuxFromPortWithLogger(lf.NewLogger("udpmux")))
		if err != nil {
			return nil, fmt.Errorf("webrtc udp %s: %w", addr, err)
		}
		e.udpMux = mux
		if addrs := mux.GetListenAddresses(); len(addrs) > 0 {
			e.localAddr = addrs[0]
			port = addrs[0].(*net.UDPAddr).Port
		}
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
			return nil, fmt.Errorf("webrtc ice-tcp %s: %w", tcpAddr, err)
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
	reg := &interceptor.Registry{}
	if err := webrtc.ConfigureNack(m, reg); err != nil {
		_ = e.Close()
		return nil, err
	}
	if err := webrtc.ConfigureRTCPReports(reg); err != nil {
		_ = e.Close()
		return nil, err
	}
	if err := webrtc.ConfigureTWCCSender(m, reg); err != nil {
		_ = e.Close()
		return nil, err
	}
	e.api = webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(s))
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

// newPeerConnection makes a peer connection on the shared sockets. Clients get the ICE servers
// through Link headers; the daemon itself needs none: it is the reachable side.
func (e *Engine) newPeerConnection() (*webrtc.PeerConnection, error) {
	return e.api.NewPeerConnection(webrtc.Configuration{})
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
	return errors.Join(errs...)
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
