package rtc

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
)

// A session is pending from its offer until its ICE connects. A pending session costs a peer
// connection, its goroutines and timers, and a participant, while its client may never have
// meant to connect; so pending sessions are capped in all, per client address and per token
// (webrtc.max_pending*), and one that does not connect within webrtc.pending_timeout ends.

var errNoICE = errors.New("no ICE connectivity within webrtc.pending_timeout")

// pendingSlot is one session's place among the pending ones.
type pendingSlot struct {
	s           *Server
	host, token string
	pc          *webrtc.PeerConnection
	claimed     bool // the session was added (guarded by s.mu)
	released    atomic.Bool
}

// pendingSet counts pending sessions; guarded by Server.mu.
type pendingSet struct {
	total   int
	byHost  map[string]int
	byToken map[string]int
	byPC    map[*webrtc.PeerConnection]*pendingSlot // slots of offers being answered
}

// reservePending takes a pending slot for the request's session, or answers 503. A slot that
// no session claims by the end of the request is released then.
func (s *Server) reservePending(w http.ResponseWriter, r *http.Request) (*pendingSlot, bool) {
	total, perIP, perToken, _ := s.engine.cfg.pendingLimits()
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	token := api.RequestToken(r)
	s.mu.Lock()
	p := &s.pending
	if p.byHost == nil {
		p.byHost, p.byToken, p.byPC = map[string]int{}, map[string]int{}, map[*webrtc.PeerConnection]*pendingSlot{}
	}
	if p.total >= total || p.byHost[host] >= perIP || (token != "" && p.byToken[token] >= perToken) {
		s.mu.Unlock()
		w.Header().Set("Retry-After", "5")
		api.WriteError(w, api.Errorf(http.StatusServiceUnavailable, "too_many_pending",
			"too many sessions are waiting for ICE to connect (from this address or token); try again later"))
		return nil, false
	}
	p.total++
	p.byHost[host]++
	if token != "" {
		p.byToken[token]++
	}
	s.mu.Unlock()
	slot := &pendingSlot{s: s, host: host, token: token}
	context.AfterFunc(r.Context(), func() {
		s.mu.Lock()
		claimed := slot.claimed
		if !claimed && slot.pc != nil {
			delete(s.pending.byPC, slot.pc)
		}
		s.mu.Unlock()
		if !claimed {
			slot.release()
		}
	})
	return slot, true
}

// bind ties the slot to the session's peer connection, for add to claim.
func (slot *pendingSlot) bind(pc *webrtc.PeerConnection) {
	slot.s.mu.Lock()
	defer slot.s.mu.Unlock()
	slot.pc = pc
	slot.s.pending.byPC[pc] = slot
}

// release gives the slot back; idempotent.
func (slot *pendingSlot) release() {
	if slot.released.Swap(true) {
		return
	}
	s := slot.s
	s.mu.Lock()
	defer s.mu.Unlock()
	p := &s.pending
	p.total--
	if p.byHost[slot.host]--; p.byHost[slot.host] <= 0 {
		delete(p.byHost, slot.host)
	}
	if slot.token != "" {
		if p.byToken[slot.token]--; p.byToken[slot.token] <= 0 {
			delete(p.byToken, slot.token)
		}
	}
}

// claimPending takes the slot of pc's offer for its session; s.mu is held.
func (s *Server) claimPending(pc *webrtc.PeerConnection) *pendingSlot {
	slot := s.pending.byPC[pc]
	if slot != nil {
		delete(s.pending.byPC, pc)
		slot.claimed = true
	}
	return slot
}

// watchPending releases the slot when the session's ICE connects, and ends the session if that
// does not happen within the pending timeout. The returned stop releases what is left; the
// session's goroutine calls it when the session ends.
func (s *Server) watchPending(ss session, slot *pendingSlot) (stop func()) {
	if slot == nil {
		return func() {}
	}
	_, _, _, timeout := s.engine.cfg.pendingLimits()
	life := ss.life()
	life.pc.OnICEConnectionStateChange(func(st webrtc.ICEConnectionState) {
		if st == webrtc.ICEConnectionStateConnected || st == webrtc.ICEConnectionStateCompleted {
			slot.release()
		}
	})
	timer := time.AfterFunc(timeout, func() {
		if !slot.released.Load() {
			life.log.Info("ending a session: no ICE connectivity within webrtc.pending_timeout", "timeout", timeout)
			ss.close(sfu.ReasonError, errNoICE)
		}
	})
	return func() {
		timer.Stop()
		slot.release()
	}
}
