package rtc

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/rtcp"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu"
)

// A viewer's media leaves below pion's write chain. Through pion, every packet to every viewer
// went through the interceptor chain, the SRTP session (a lock and a map lookup), the DTLS mux
// endpoint, the ICE connection and candidate pair (two clock reads) and the ICE UDP mux (a
// lock and an address lookup) before reaching our socket, a large share of the daemon's CPU with
// many viewers (BenchmarkDownTrackDirect). A direct route encrypts with the viewer's own SRTP context and queues the packet on
// the socket of the selected candidate pair. pion still does ICE, DTLS, RTCP in, and RTCP out
// (our sender reports through its SRTCP session).
//
// Once a down track has sent through its own SRTP context it must keep doing so: the
// receiver's rollover counter follows one sender's sequence. A route that moves to something
// we cannot write (ICE-TCP) ends the session.

// directRoute is where a down track's packets go: the UDP socket, the viewer's address and
// the track's SRTP context (one per down track: each has one writer at a time).
type directRoute struct {
	conn *batchConn
	addr netip.AddrPort
	srtp *srtp.Context
}

// errNoDirectRoute tells that a connection's media must go through pion (ICE-TCP, or keys
// pion did not let us read).
var errNoDirectRoute = errors.New("no direct route")

// srtpKeys returns the local SRTP master key and salt of a connected DTLS transport, and the
// profile. pion v4.2.26 still keeps the DTLS connection unexported: its keying material is read the
// way pion itself reads it, from DTLSTransport.conn (TestDirectRouteKeys fails if a pion
// upgrade renames or retypes it).
func srtpKeys(t *webrtc.DTLSTransport, isClient bool) (key, salt []byte, profile srtp.ProtectionProfile, err error) {
	if t.State() != webrtc.DTLSTransportStateConnected { // also orders our read after pion's write of conn
		return nil, nil, 0, fmt.Errorf("%w: dtls is %s", errNoDirectRoute, t.State())
	}
	f := reflect.ValueOf(t).Elem().FieldByName("conn")
	if !f.IsValid() || f.Type() != reflect.TypeFor[*dtls.Conn]() || f.IsNil() {
		return nil, nil, 0, fmt.Errorf("%w: pion's DTLSTransport has no conn *dtls.Conn", errNoDirectRoute)
	}
	conn := (*dtls.Conn)(f.UnsafePointer()) //nolint:gosec // G103: pion's own field, of the checked type
	p, ok := conn.SelectedSRTPProtectionProfile()
	if !ok {
		return nil, nil, 0, fmt.Errorf("%w: no srtp profile", errNoDirectRoute)
	}
	switch p {
	case dtls.SRTP_AEAD_AES_128_GCM:
		profile = srtp.ProtectionProfileAeadAes128Gcm
	case dtls.SRTP_AEAD_AES_256_GCM:
		profile = srtp.ProtectionProfileAeadAes256Gcm
	case dtls.SRTP_AES128_CM_HMAC_SHA1_80:
		profile = srtp.ProtectionProfileAes128CmHmacSha1_80
	default:
		return nil, nil, 0, fmt.Errorf("%w: srtp profile %v", errNoDirectRoute, p)
	}
	state, ok := conn.ConnectionState()
	if !ok {
		return nil, nil, 0, fmt.Errorf("%w: no dtls state", errNoDirectRoute)
	}
	cfg := srtp.Config{Profile: profile}
	if err := cfg.ExtractSessionKeysFromDTLS(&state, isClient); err != nil {
		return nil, nil, 0, fmt.Errorf("%w: %w", errNoDirectRoute, err)
	}
	return cfg.Keys.LocalMasterKey, cfg.Keys.LocalMasterSalt, profile, nil
}

// dtlsClient reports whether this side of pc is the DTLS client (a=setup:active in its
// description).
func dtlsClient(pc *webrtc.PeerConnection) bool {
	d := pc.CurrentLocalDescription()
	return d != nil && strings.Contains(d.SDP, "a=setup:active")
}

// connFor returns the socket a local candidate lives on: the one bound to its address and
// port, or the only one on that port (a candidate rewritten to a public address).
func (e *Engine) connFor(c *webrtc.ICECandidate) *batchConn {
	if c == nil || c.Protocol != webrtc.ICEProtocolUDP {
		return nil
	}
	addr, err := netip.ParseAddr(c.Address)
	if err != nil {
		return nil
	}
	var onPort []*batchConn
	for _, bc := range e.conns {
		la := bc.localAddrPort()
		if la.Port() != c.Port {
			continue
		}
		if la.Addr().Unmap() == addr.Unmap() {
			return bc
		}
		onPort = append(onPort, bc)
	}
	if len(onPort) == 1 && len(e.conns) == 1 {
		return onPort[0]
	}
	return nil
}

// route returns the direct route of the connection's selected candidate pair, reusing ctx.
func (e *Engine) route(pair *webrtc.ICECandidatePair, ctx *srtp.Context) (*directRoute, error) {
	if pair == nil || pair.Remote == nil || pair.Remote.Protocol != webrtc.ICEProtocolUDP {
		return nil, fmt.Errorf("%w: the selected candidate pair is not UDP", errNoDirectRoute)
	}
	conn := e.connFor(pair.Local)
	if conn == nil {
		return nil, fmt.Errorf("%w: the local candidate %s:%d is not one of our sockets", errNoDirectRoute, pair.Local.Address, pair.Local.Port)
	}
	ip, err := netip.ParseAddr(pair.Remote.Address)
	if err != nil {
		return nil, fmt.Errorf("%w: remote address %q", errNoDirectRoute, pair.Remote.Address)
	}
	return &directRoute{conn: conn, addr: netip.AddrPortFrom(ip, pair.Remote.Port), srtp: ctx}, nil
}

// senderReportInterval is how often a viewer gets sender reports (pion's default too).
const senderReportInterval = time.Second

// senderReports builds the RTCP sender reports of the viewer's down tracks that sent.
func (v *viewer) senderReports(now time.Time) []rtcp.Packet {
	var pkts []rtcp.Packet
	for _, sl := range v.slots {
		if sr, ok := sl.dt.senderReport(now); ok {
			pkts = append(pkts, sr)
		}
	}
	return pkts
}

// reportLoop sends sender reports every second until the session ends: browsers need them to
// play audio and video in sync. (The viewers' pion API has no report interceptor: it would
// only see packets that go through pion.)
func (v *viewer) reportLoop() {
	select {
	case <-v.connected:
	case <-v.ctx.Done():
		return
	}
	t := time.NewTicker(senderReportInterval)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			if pkts := v.senderReports(now); len(pkts) > 0 {
				_ = v.pc.WriteRTCP(pkts) // fails only once the connection is closing
			}
		case <-v.ctx.Done():
			return
		}
	}
}

// routeDirect moves the down tracks to a direct route once the connection is up, and follows
// the selected candidate pair. A connection on ICE-TCP stays with pion.
func (v *viewer) routeDirect() {
	if len(v.slots) == 0 {
		return
	}
	direct := false
	defer func() {
		if direct {
			v.engine.routedDirect.Add(1)
		} else {
			v.engine.routedPion.Add(1)
		}
	}()
	dtlsT := v.slots[0].sender.Transport()
	if dtlsT == nil {
		return
	}
	iceT := dtlsT.ICETransport()
	pair, err := iceT.GetSelectedCandidatePair()
	if err != nil || pair == nil {
		v.log.Debug("media through pion", "err", err)
		return
	}
	base, err := v.engine.route(pair, nil)
	if err != nil {
		v.log.Debug("media through pion", "err", err)
		return
	}
	key, salt, profile, err := srtpKeys(dtlsT, dtlsClient(v.pc))
	if err != nil {
		v.log.Warn("media through pion: cannot use our own srtp", "err", err)
		return
	}
	routes := make([]*directRoute, len(v.slots))
	for i := range v.slots {
		ctx, err := srtp.CreateContext(key, salt, profile)
		if err != nil {
			v.log.Warn("media through pion: srtp context", "err", err)
			return
		}
		routes[i] = &directRoute{conn: base.conn, addr: base.addr, srtp: ctx}
	}
	for i, sl := range v.slots {
		sl.dt.setRoute(routes[i])
	}
	direct = true
	iceT.OnSelectedCandidatePairChange(func(pair *webrtc.ICECandidatePair) {
		for _, sl := range v.slots {
			cur := sl.dt.route.Load()
			if cur == nil {
				continue
			}
			r, err := v.engine.route(pair, cur.srtp)
			if err != nil {
				v.close(sfu.ReasonError, fmt.Errorf("the connection moved to a path this session cannot send on: %w", err))
				return
			}
			sl.dt.setRoute(r)
		}
	})
}
