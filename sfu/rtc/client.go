package rtc

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"
)

// Session is the client side of a WHIP or WHEP exchange.
type Session struct {
	// Resource is the session URL from the Location header (DELETE it to end the session).
	Resource string
	client   *http.Client
	token    string
}

// StatusError is a WHIP or WHEP endpoint's refusal of an offer: its HTTP status (503 when the
// server is overloaded) and the body it answered with.
type StatusError struct {
	Endpoint   string
	Status     int
	StatusText string // "503 Service Unavailable"
	Body       string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s: %s: %s", e.Endpoint, e.StatusText, e.Body)
}

// Negotiate performs a WHIP or WHEP exchange for pc against endpoint (…/whip/ROOM or
// …/whep/ROOM): it creates the offer, waits for local candidates, POSTs it and applies the
// answer. token may be empty (open mode). A refusal by the endpoint is a *StatusError.
func Negotiate(ctx context.Context, endpoint, token string, pc *webrtc.PeerConnection) (*Session, error) {
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return nil, err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return nil, err
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(pc.LocalDescription().SDP))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/sdp")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	client := &http.Client{Timeout: 15 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxSDPBody))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusCreated {
		return nil, &StatusError{Endpoint: endpoint, Status: resp.StatusCode, StatusText: resp.Status, Body: strings.TrimSpace(string(body))}
	}
	loc, err := resp.Location()
	if err != nil {
		return nil, fmt.Errorf("%s: answer without Location: %w", endpoint, err)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		return nil, fmt.Errorf("applying the answer: %w", err)
	}
	return &Session{Resource: loc.String(), client: client, token: token}, nil
}

// Close ends the session on the server (DELETE on its resource).
func (s *Session) Close(ctx context.Context) error {
	if _, err := url.Parse(s.Resource); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, s.Resource, nil)
	if err != nil {
		return err
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("DELETE %s: %s", s.Resource, resp.Status)
	}
	return nil
}

// LoopbackAPI returns a pion stack for peers on this machine (tests, tools next to a local
// daemon): m's codecs (pion's defaults when m is nil), pion's default interceptors (NACK, RTCP
// reports, TWCC), and ICE on IPv4 loopback only, without mDNS.
func LoopbackAPI(m *webrtc.MediaEngine) (*webrtc.API, error) {
	if m == nil {
		m = &webrtc.MediaEngine{}
		if err := m.RegisterDefaultCodecs(); err != nil {
			return nil, err
		}
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, reg); err != nil {
		return nil, err
	}
	var s webrtc.SettingEngine
	s.SetIncludeLoopbackCandidate(true)
	s.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	s.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	s.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(s)), nil
}
