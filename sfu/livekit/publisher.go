package livekit

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"

	lkp "github.com/livekit/protocol/livekit"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/rtc"
)

// maxPendingTracks bounds the tracks announced (AddTrack) but not yet receiving media.
const maxPendingTracks = 32

// publisher is the session's publisher connection: the client offers, and each AddTrack
// announces a track that is published in the room when its media arrives.
type publisher struct {
	s  *session
	pc *webrtc.PeerConnection
	wg sync.WaitGroup

	mu         sync.Mutex
	pending    map[string]*pendingTrack // by the client's track id (cid)
	published  map[string]*sfu.Track    // by sid
	candidates []webrtc.ICECandidateInit
	stream     *sfu.Stream
	closed     bool // set by stop: no more readers start
}

// stop closes the connection and waits for the track readers.
func (p *publisher) stop() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	if p.pc != nil {
		_ = p.pc.Close()
	}
	p.wg.Wait()
}

// pendingTrack is a track the client announced; sid is what TrackPublished told it.
type pendingTrack struct {
	sid   string
	req   *lkp.AddTrackRequest
	muted bool
	track *sfu.Track // set once published
}

func (p *publisher) setup() {
	p.published = map[string]*sfu.Track{}
	p.pc.OnICECandidate(func(c *webrtc.ICECandidate) { p.s.sendTrickle(c, lkp.SignalTarget_PUBLISHER) })
	p.pc.OnTrack(p.onTrack)
	p.pc.OnDataChannel(p.s.onDataChannel)
	p.s.watchICE(p.pc, "publisher")
}

// offer answers the client's publisher offer.
func (p *publisher) offer(sd *lkp.SessionDescription) error {
	if sd.GetType() != "offer" {
		return fmt.Errorf("publisher offer has type %q", sd.GetType())
	}
	if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: sd.GetSdp()}); err != nil {
		return fmt.Errorf("publisher offer refused: %w", err)
	}
	p.flushCandidates()
	ans, err := p.pc.CreateAnswer(nil)
	if err != nil {
		return fmt.Errorf("cannot answer the publisher offer: %w", err)
	}
	if err := p.pc.SetLocalDescription(ans); err != nil {
		return fmt.Errorf("cannot answer the publisher offer: %w", err)
	}
	p.s.send(&lkp.SignalResponse{Message: &lkp.SignalResponse_Answer{Answer: &lkp.SessionDescription{
		Type: "answer", Sdp: p.pc.LocalDescription().SDP, Id: sd.GetId(),
	}}})
	p.s.mu.Lock()
	first := !p.s.offered
	p.s.offered = true
	p.s.mu.Unlock()
	if first {
		p.s.sub.negotiate() // the client is configured: its subscriber connection can start
	}
	return nil
}

// candidate adds a client candidate, or keeps it until the offer it belongs to arrives.
func (p *publisher) candidate(c webrtc.ICECandidateInit) {
	addCandidate(&p.mu, p.pc, &p.candidates, c, p.s.log)
}

// maxCandidates bounds the candidates kept before a description arrives.
const maxCandidates = 64

// addCandidate adds c to pc, or keeps it in pending (guarded by mu) for the description it
// belongs to: while pc has no remote description, or when c names an ICE username fragment
// the remote description does not have (a client restarting ICE may trickle before its offer
// or answer arrives).
func addCandidate(mu *sync.Mutex, pc *webrtc.PeerConnection, pending *[]webrtc.ICECandidateInit, c webrtc.ICECandidateInit, log *slog.Logger) {
	mu.Lock()
	if rd := pc.RemoteDescription(); rd == nil || !hasUfrag(rd.SDP, c.Candidate) {
		if len(*pending) < maxCandidates {
			*pending = append(*pending, c)
		}
		mu.Unlock()
		return
	}
	mu.Unlock()
	if err := pc.AddICECandidate(c); err != nil {
		log.Debug("client candidate refused", "err", err)
	}
}

// hasUfrag reports whether sdp has the ICE username fragment candidate names (true when it
// names none).
func hasUfrag(sdp, candidate string) bool {
	f := strings.Fields(candidate)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "ufrag" {
			return strings.Contains(sdp, "a=ice-ufrag:"+f[i+1]+"\r\n") || strings.Contains(sdp, "a=ice-ufrag:"+f[i+1]+"\n")
		}
	}
	return true
}

func (p *publisher) flushCandidates() {
	p.mu.Lock()
	cs := p.candidates
	p.candidates = nil
	p.mu.Unlock()
	for _, c := range cs {
		_ = p.pc.AddICECandidate(c)
	}
}

// addTrack answers an AddTrackRequest with the track's sid (TrackPublished).
func (p *publisher) addTrack(req *lkp.AddTrackRequest) {
	if !p.s.grant.canPublish {
		p.s.log.Info("refusing a track: the token does not allow publishing", "cid", req.GetCid())
		p.s.send(&lkp.SignalResponse{Message: &lkp.SignalResponse_RequestResponse{RequestResponse: &lkp.RequestResponse{
			Reason: lkp.RequestResponse_NOT_ALLOWED, Message: "the token does not allow publishing",
		}}})
		return
	}
	p.mu.Lock()
	pt := p.pending[req.GetCid()]
	if pt == nil {
		if len(p.pending) >= maxPendingTracks {
			p.mu.Unlock()
			p.s.send(&lkp.SignalResponse{Message: &lkp.SignalResponse_RequestResponse{RequestResponse: &lkp.RequestResponse{
				Reason: lkp.RequestResponse_LIMIT_EXCEEDED, Message: "too many tracks",
			}}})
			return
		}
		pt = &pendingTrack{sid: sfu.NewID(sfu.PrefixTrack), req: req, muted: req.GetMuted()}
		p.pending[req.GetCid()] = pt
	}
	p.mu.Unlock()
	ti := &lkp.TrackInfo{
		Sid: pt.sid, Type: req.GetType(), Name: req.GetName(), Muted: req.GetMuted(),
		Width: req.GetWidth(), Height: req.GetHeight(), Source: req.GetSource(), Stream: req.GetStream(),
	}
	p.s.send(&lkp.SignalResponse{Message: &lkp.SignalResponse_TrackPublished{TrackPublished: &lkp.TrackPublishedResponse{Cid: req.GetCid(), Track: ti}}})
}

// mute records the client's mute of one of its tracks.
func (p *publisher) mute(sid string, muted bool) {
	p.mu.Lock()
	var track *sfu.Track
	for _, pt := range p.pending {
		if pt.sid == sid {
			pt.muted = muted
			track = pt.track
		}
	}
	p.mu.Unlock()
	if track != nil {
		_ = p.s.p.SetTrackMuted(track, muted)
	}
}

// onTrack publishes a remote track under the sid its AddTrack got, and reads it until the
// session ends. Of a simulcast track only the first layer that arrives is published.
func (p *publisher) onTrack(remote *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
	codec := remote.Codec()
	name := sfu.CodecFromMime(codec.MimeType)
	if name == "" {
		p.s.log.Warn("ignoring a track with an unsupported codec", "mime", codec.MimeType)
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	pt := p.pending[remote.ID()]
	if pt == nil {
		// Media without AddTrack: publish it under a new sid.
		pt = &pendingTrack{sid: sfu.NewID(sfu.PrefixTrack), req: &lkp.AddTrackRequest{Cid: remote.ID()}}
		p.pending[remote.ID()] = pt
	}
	if pt.track != nil {
		p.mu.Unlock()
		return // another simulcast layer
	}
	source := sfuSource(pt.req.GetSource(), pt.req.GetType())
	if pt.req.GetType() == lkp.TrackType_AUDIO && remote.Kind() == webrtc.RTPCodecTypeVideo {
		source = sfu.SourceCamera
	}
	ssrc := uint32(remote.SSRC())
	pc := p.pc
	track, err := p.s.p.Publish(sfu.TrackSpec{
		Codec:  sfu.Codec{Name: name, ClockRate: codec.ClockRate, Channels: codec.Channels, Fmtp: codec.SDPFmtpLine, PayloadType: uint8(codec.PayloadType)},
		Source: source,
		Name:   pt.req.GetName(),
		Width:  int(pt.req.GetWidth()), Height: int(pt.req.GetHeight()),
		SID:        pt.sid,
		AudioLevel: p.s.srv.engine.AudioLevel(pc, ssrc),
		Keyframes: sfu.KeyframeRequesterFunc(func() {
			_ = pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}})
		}),
	})
	if err != nil {
		p.mu.Unlock()
		return // the session is ending
	}
	pt.track = track
	p.published[pt.sid] = track
	muted := pt.muted
	if p.stream == nil {
		p.stream, _ = p.s.p.StartStream(sfu.StreamSpec{Direction: sfu.DirectionPublish, Protocol: sfu.ProtocolWebRTC,
			RemoteAddr: p.s.p.Info().RemoteAddr, Stats: p.s.srv.engine.Stats(pc)})
	}
	p.wg.Add(2)
	p.mu.Unlock()
	if muted {
		_ = p.s.p.SetTrackMuted(track, true)
	}
	go func() {
		defer p.wg.Done()
		rtc.ReadRTP(remote, track, p.s.log)
		if p.s.ctx.Err() == nil { // the client stopped sending it; else the leave ends it
			_ = p.s.p.Unpublish(track, sfu.ReasonUnpublished)
		}
	}()
	go func() {
		defer p.wg.Done()
		rtc.ReadRTCP(recv, track)
	}()
}
