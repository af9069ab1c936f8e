package livekit

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	lkp "github.com/livekit/protocol/livekit"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/rtc"
)

// subscriber is the session's subscriber connection: the server offers a down track per
// subscribed track, and offers again when the set changes. One offer is outstanding at a time;
// changes made meanwhile go into the next.
type subscriber struct {
	s  *session
	pc *webrtc.PeerConnection
	wg sync.WaitGroup

	mu          sync.Mutex
	downs       map[string]*down // by source track sid
	negotiating bool             // an offer waits for its answer
	again       bool             // the set changed while negotiating
	restart     bool             // the next offer restarts ICE (the client resumed)
	offerID     uint32
	candidates  []webrtc.ICECandidateInit
	closed      bool
	// explicit holds the client's UpdateSubscription choices by track sid; a track without
	// one is subscribed when the session auto-subscribes. disabled holds the tracks whose
	// settings pause them.
	explicit map[string]bool
	disabled map[string]bool
	playing  bool // the play stream was started (its first subscription)

	// Data channels to the client, made before the first offer.
	reliable, lossy *webrtc.DataChannel
}

// down is one subscribed track: the source, what feeds the down track (the source or its
// transcoded form), the sender and the subscription.
type down struct {
	src     *sfu.Track
	release func()
	dt      *rtc.DownTrack
	gate    *pauseGate
	sender  *webrtc.RTPSender
	sub     *sfu.Subscription
	// limit is the highest simulcast layer the client asked for (UpdateTrackSettings).
	limit atomic.Int32
}

// pauseGate passes packets to the down track unless the client disabled the track
// (UpdateTrackSettings); after a pause, video resumes at a keyframe and the sequence gap is
// closed rather than presented as loss.
type pauseGate struct {
	dt      *rtc.DownTrack
	video   bool
	paused  atomic.Bool
	skipped bool // owned by the subscription's goroutine
}

func (g *pauseGate) WritePacket(p *sfu.Packet, gap bool) error {
	if g.paused.Load() {
		g.skipped = true
		return nil
	}
	if g.skipped {
		if g.video && !p.Keyframe {
			return nil
		}
		g.skipped, gap = false, true
	}
	return g.dt.WritePacket(p, gap)
}

func (b *subscriber) setup() {
	b.pc.OnICECandidate(func(c *webrtc.ICECandidate) { b.s.sendTrickle(c, lkp.SignalTarget_SUBSCRIBER) })
	b.s.watchICE(b.pc, "subscriber")
	ordered := false
	var zero uint16
	b.reliable, _ = b.pc.CreateDataChannel(dataReliable, nil)
	b.lossy, _ = b.pc.CreateDataChannel(dataLossy, &webrtc.DataChannelInit{Ordered: &ordered, MaxRetransmits: &zero})
}

// stop closes the connection, ends the subscriptions' conversions and waits for the RTCP
// readers. The participant has left already (its subscriptions are closed).
func (b *subscriber) stop() {
	b.mu.Lock()
	b.closed = true
	downs := b.downs
	b.downs = map[string]*down{}
	b.mu.Unlock()
	if b.pc != nil {
		_ = b.s.srv.engine.ClosePC(b.pc)
	}
	for _, d := range downs {
		if d.release != nil {
			d.release()
		}
	}
	b.wg.Wait()
}

// wants reports whether the client wants track sid: its explicit choice, else auto-subscribe.
// b.mu is held.
func (b *subscriber) wants(sid string) bool {
	if on, ok := b.explicit[sid]; ok {
		return on
	}
	return b.s.auto
}

// choose records the client's subscription choice for the tracks sids.
func (b *subscriber) choose(sids []string, on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.explicit == nil {
		b.explicit = map[string]bool{}
	}
	for _, sid := range sids {
		b.explicit[sid] = on
	}
}

// setDisabled pauses or resumes the tracks sids (now, and when they are subscribed later).
func (b *subscriber) setDisabled(sids []string, off bool) {
	b.mu.Lock()
	if b.disabled == nil {
		b.disabled = map[string]bool{}
	}
	var resumed []*down
	for _, sid := range sids {
		if off {
			b.disabled[sid] = true
		} else {
			delete(b.disabled, sid)
		}
		if d := b.downs[sid]; d != nil && d.gate.paused.Swap(off) && !off {
			resumed = append(resumed, d)
		}
	}
	b.mu.Unlock()
	for _, d := range resumed {
		d.sub.RequestKeyframe()
	}
}

// setLimit caps the simulcast layer of the tracks sids at what the client asked for: a size
// (adaptive stream: its video element's), else a quality. Track settings that come before the
// subscription are not kept.
func (b *subscriber) setLimit(ts *lkp.UpdateTrackSettings) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, sid := range ts.GetTrackSids() {
		if d := b.downs[sid]; d != nil {
			d.limit.Store(int32(limitLayer(d.src, ts)))
			if d.sub != nil {
				d.sub.SetMaxLayer(min(d.sub.MaxLayer(), int(d.limit.Load())))
			}
		}
	}
}

// limitLayer is the layer of t that a client asking for ts needs: LiveKit's layers are a quarter,
// half and all of the full size.
func limitLayer(t *sfu.Track, ts *lkp.UpdateTrackSettings) int {
	w, h := t.Size()
	switch {
	case ts.GetWidth() == 0 && ts.GetHeight() == 0:
		if q := int(ts.GetQuality()); q <= sfu.LayerHighest {
			return q
		}
		return sfu.LayerHighest
	case w == 0 || h == 0:
		return sfu.LayerHighest
	}
	ratio := max(float64(ts.GetWidth())/float64(w), float64(ts.GetHeight())/float64(h))
	switch {
	case ratio <= 0.3:
		return 0
	case ratio <= 0.6:
		return 1
	}
	return sfu.LayerHighest
}

// sync makes the subscribed set the tracks of others that the client wants: new tracks get a
// down track, gone ones lose theirs; a change starts a negotiation.
func (b *subscriber) sync(others []*sfu.Track) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	keep := make(map[string]bool, len(others))
	var add []*sfu.Track
	for _, t := range others {
		if !b.wants(t.SID()) {
			continue
		}
		keep[t.SID()] = true
		if d := b.downs[t.SID()]; d == nil || d.src != t {
			add = append(add, t)
		}
	}
	var drop []*down
	for sid, d := range b.downs {
		if !keep[sid] || d.src.Closed() {
			drop = append(drop, d)
			delete(b.downs, sid)
		}
	}
	b.mu.Unlock()
	changed := false
	for _, d := range drop {
		b.s.p.Unsubscribe(d.sub)
		if err := b.pc.RemoveTrack(d.sender); err == nil {
			changed = true
		}
		if d.release != nil {
			d.release()
		}
	}
	for _, t := range add {
		d, err := b.attach(t)
		if err != nil {
			b.s.log.Info("cannot subscribe", "track", t.SID(), "err", err)
			continue
		}
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			b.s.p.Unsubscribe(d.sub)
			if d.release != nil {
				d.release()
			}
			return
		}
		b.downs[t.SID()] = d
		b.wg.Add(1)
		b.mu.Unlock()
		go func() {
			defer b.wg.Done()
			b.readRTCP(d)
		}()
		changed = true
	}
	b.startStream()
	b.s.mu.Lock()
	ready := b.s.offered
	b.s.mu.Unlock()
	if changed && ready { // before the client's first offer, that offer starts ours
		b.negotiate()
	}
}

// startStream starts the play stream (stream.playing) at the first subscription; it ends when
// the participant leaves. Its figures come from the client's receiver reports.
func (b *subscriber) startStream() {
	b.mu.Lock()
	start := !b.playing && !b.closed && len(b.downs) > 0
	b.playing = b.playing || start
	b.mu.Unlock()
	if start {
		_, _ = b.s.p.StartStream(sfu.StreamSpec{Direction: sfu.DirectionPlay, Protocol: sfu.ProtocolWebRTC,
			RemoteAddr: b.s.p.Info().RemoteAddr, Stats: b.s.srv.engine.Stats(b.pc)})
	}
}

// attach adds a down track for t (transcoded when browsers cannot take its codec) and
// subscribes it.
func (b *subscriber) attach(t *sfu.Track) (*down, error) {
	d := &down{src: t}
	d.limit.Store(sfu.LayerHighest)
	feed := t
	if want := deliveredCodec(t.Codec()); want.Name != t.Codec().Name {
		out, release, err := b.s.srv.hub.Transcode(t, want.Name)
		if err != nil {
			code := "codec_not_supported"
			if errors.Is(err, sfu.ErrNoTranscoder) {
				code = "transcoder_unavailable"
			}
			b.s.p.SubscriptionFailed(t, code, err)
			return nil, err
		}
		feed, d.release = out, release
	}
	pinfo := t.Participant().Info()
	// LiveKit clients find the participant and track of a media stream by its id:
	// "<participant sid>|<track sid>".
	d.dt = rtc.NewDownTrack(feed.Codec(), t.SID(), pinfo.SID+"|"+t.SID())
	sender, err := b.pc.AddTrack(d.dt)
	if err != nil {
		if d.release != nil {
			d.release()
		}
		return nil, fmt.Errorf("add track: %w", err)
	}
	d.sender = sender
	d.gate = &pauseGate{dt: d.dt, video: feed.Codec().Kind() == sfu.KindVideo}
	b.mu.Lock()
	d.gate.paused.Store(b.disabled[t.SID()])
	b.mu.Unlock()
	sub, err := b.s.p.Subscribe(feed, d.gate, sfu.SubscribeOptions{})
	if err != nil {
		_ = b.pc.RemoveTrack(sender)
		if d.release != nil {
			d.release()
		}
		return nil, err
	}
	d.sub = sub
	return d, nil
}

// readRTCP drains a sender's RTCP: PLI and FIR ask the source for a keyframe, NACKs are
// answered from the down track's history.
func (b *subscriber) readRTCP(d *down) {
	var lost []uint16
	est := rtc.NewEstimator()
	for {
		pkts, _, err := d.sender.ReadRTCP()
		if err != nil {
			return
		}
		for _, pk := range pkts {
			switch pk := pk.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				d.sub.RequestKeyframe()
			case *rtcp.ReceiverReport:
				d.dt.Adapt(d.sub, est, pk.Reports, int(d.limit.Load()))
			case *rtcp.ReceiverEstimatedMaximumBitrate:
				d.dt.AdaptREMB(d.sub, est, float64(pk.Bitrate), int(d.limit.Load()))
			case *rtcp.TransportLayerNack:
				d.dt.AdaptNACK(d.sub, est, int(d.limit.Load()))
				if b.s.srv.hub.Congested() {
					continue
				}
				lost = lost[:0]
				for _, pair := range pk.Nacks {
					pair.Range(func(seq uint16) bool { lost = append(lost, seq); return true })
				}
				d.dt.Resend(lost)
			}
		}
	}
}

// negotiate sends an offer, or when one is outstanding marks that another is needed.
func (b *subscriber) negotiate() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	if b.negotiating {
		b.again = true
		return
	}
	b.offerLocked()
}

// negotiateRestart makes the next offer an ICE restart, for a resumed client. An offer still
// outstanding (it may have been lost with the old WebSocket) is sent again first.
func (b *subscriber) negotiateRestart() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.restart = true
	if b.negotiating {
		b.again = true
		if pending := b.pc.PendingLocalDescription(); pending != nil {
			b.s.send(&lkp.SignalResponse{Message: &lkp.SignalResponse_Offer{Offer: &lkp.SessionDescription{
				Type: "offer", Sdp: pending.SDP, Id: b.offerID,
			}}})
		}
		return
	}
	if b.pc.RemoteDescription() == nil {
		return // never negotiated: the first offer comes after the client's
	}
	b.offerLocked()
}

// offerLocked creates, applies and sends the next offer; b.mu is held.
func (b *subscriber) offerLocked() {
	offer, err := b.pc.CreateOffer(&webrtc.OfferOptions{ICERestart: b.restart})
	if err == nil {
		err = b.pc.SetLocalDescription(offer)
	}
	if err != nil {
		b.s.log.Warn("subscriber offer failed", "err", err)
		b.s.close(sfu.ReasonError, fmt.Errorf("subscriber offer: %w", err))
		return
	}
	b.restart = false
	b.negotiating = true
	b.offerID++
	b.s.send(&lkp.SignalResponse{Message: &lkp.SignalResponse_Offer{Offer: &lkp.SessionDescription{
		Type: "offer", Sdp: b.pc.LocalDescription().SDP, Id: b.offerID,
	}}})
}

// answer applies the client's answer to our offer, then sends the next offer if the set
// changed meanwhile.
func (b *subscriber) answer(sd *lkp.SessionDescription) error {
	b.mu.Lock()
	if !b.negotiating || (sd.GetId() != 0 && sd.GetId() != b.offerID) {
		b.mu.Unlock()
		b.s.log.Debug("ignoring a stale or unsolicited subscriber answer", "id", sd.GetId())
		return nil
	}
	if err := b.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sd.GetSdp()}); err != nil {
		b.mu.Unlock()
		return fmt.Errorf("subscriber answer refused: %w", err)
	}
	cs := b.candidates
	b.candidates = nil
	b.negotiating = false
	again := b.again
	b.again = false
	b.mu.Unlock()
	for _, c := range cs {
		_ = b.pc.AddICECandidate(c)
	}
	// Newly bound down tracks start with a keyframe.
	for _, d := range b.snapshot() {
		d.sub.RequestKeyframe()
	}
	if again {
		b.negotiate()
	}
	return nil
}

func (b *subscriber) snapshot() []*down {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*down, 0, len(b.downs))
	for _, d := range b.downs {
		out = append(out, d)
	}
	return out
}

// candidate adds a client candidate, or keeps it until the client's answer arrives.
func (b *subscriber) candidate(c webrtc.ICECandidateInit) {
	addCandidate(&b.mu, b.pc, &b.candidates, c, b.s.log)
}
