package rtc

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/auth"
)

// connectTimeout ends a viewer whose ICE/DTLS never completes.
const connectTimeout = 30 * time.Second

// postWHEP answers a WHEP offer with the audio and video of one participant: the named one, or
// the room's main publisher.
func (s *Server) postWHEP(w http.ResponseWriter, r *http.Request) {
	claims, ok := s.admit(w, r, auth.ActionSubscribe, sfu.ProtocolWHEP)
	if !ok {
		return
	}
	if s.hub.Overloaded() {
		api.WriteError(w, api.Errorf(http.StatusServiceUnavailable, api.CodeOverloaded, "the server is at its CPU budget; try again later"))
		return
	}
	roomName, identity := r.PathValue("room"), r.PathValue("identity")
	room := s.hub.Room(roomName)
	if room == nil {
		api.WriteError(w, api.Errorf(http.StatusNotFound, api.CodeNotFound, "room %q not found", roomName))
		return
	}
	if (sfu.Selector{Identity: identity}).Participant(room) == nil {
		what := "no one is publishing video in room " + roomName
		if identity != "" {
			what = fmt.Sprintf("participant %q is not in room %q", identity, roomName)
		}
		api.WriteError(w, api.Errorf(http.StatusNotFound, "no_publisher", "%s", what))
		return
	}
	parent, pc, p, ok := s.acceptOffer(w, r, roomName, sfu.ParticipantWebRTC, claims, nil)
	if !ok {
		return
	}
	v := &viewer{
		sessionLife: newSessionLife(parent, pc, p, s.log.With("room", roomName, "participant", p.Identity(), "protocol", "whep")),
		engine:      s.engine,
		hub:         s.hub,
		connected:   make(chan struct{}),
		figures:     sfu.NewReportStats(),
	}
	fail := func(reason string, err, answer error) {
		_ = pc.Close()
		p.Close(reason, err)
		v.f.Close()
		api.WriteError(w, answer)
	}
	if err := v.attach(roomName, identity); err != nil {
		fail(sfu.ReasonError, err, err)
		return
	}
	source := v.f.Source().Identity() // attach found one; read before the session runs
	v.watchConnection()
	sdpAnswer, err := answer(pc, nil)
	if err != nil {
		fail(sfu.ReasonError, err, err)
		return
	}
	id, ok := s.add("whep", v, sessionOwner(r, claims))
	if !ok {
		fail(sfu.ReasonServerShutdown, nil, api.Errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "shutting down"))
		return
	}
	v.log.Info("whep session started", "source", source)
	s.writeAnswer(w, "whep", id, v.etag(), sdpAnswer)
}

// viewer is a WHEP session: one down track per kind, following the source across reconnects
// and changes of main publisher (sfu.Follower). A source track in a codec the viewer cannot
// take is played through the hub's transcoder (AAC as Opus, VP8/VP9/H.265 as H.264).
type viewer struct {
	sessionLife
	engine    *Engine
	hub       *sfu.Hub
	f         *sfu.Follower // owned by the request's goroutine, then by the session's serve loop
	slots     []*slot
	wg        sync.WaitGroup
	connected chan struct{}
	connOnce  sync.Once
	figures   *sfu.ReportStats // from the viewer's receiver reports
}

// slot is one outgoing track of the viewer; its follower leg feeds dt.
type slot struct {
	kind   sfu.Kind
	dt     *DownTrack // nil while the offer is being answered
	sender *webrtc.RTPSender
}

// attach follows the source (identity, else the main publisher) and adds a down track for each
// of its tracks that the viewer's offer can carry, as is or transcoded; each other track gets
// track.subscription_failed. Once answered, a slot takes its negotiated codec only (converted
// to it when a later source has another one).
func (v *viewer) attach(room, identity string) error {
	offered := map[webrtc.RTPCodecType][]webrtc.RTPCodecParameters{}
	for _, t := range v.pc.GetTransceivers() {
		offered[t.Kind()] = append(offered[t.Kind()], t.Receiver().GetParameters().Codecs...)
	}
	var legs []sfu.Leg
	var slots []*slot
	for _, kind := range []sfu.Kind{sfu.KindVideo, sfu.KindAudio} {
		sl := &slot{kind: kind}
		// What the viewer cannot take is converted to H.264 or Opus, if it takes that.
		offer, to := offered[webrtc.RTPCodecTypeAudio], sfu.CodecOpus
		if kind == sfu.KindVideo {
			offer, to = offered[webrtc.RTPCodecTypeVideo], sfu.CodecH264
		}
		legs = append(legs, sfu.Leg{
			Kind: kind,
			Takes: func(c sfu.Codec) bool {
				if sl.dt == nil {
					return CanCarry(c, offer)
				}
				return c.Same(sl.dt.codec)
			},
			Convert: func(sfu.Codec) string {
				if sl.dt != nil {
					return sl.dt.codec.Name
				}
				if CanCarry(sfu.Codec{Name: to}, offer) {
					return to
				}
				return ""
			},
			Sink:     sinkClosing{sl, v},
			Switched: func(*sfu.Track) { sl.dt.Switch() },
		})
		slots = append(slots, sl)
	}
	v.f = sfu.NewFollower(v.hub, sfu.FollowerSpec{Room: room, Select: sfu.Selector{Identity: identity}, Legs: legs, Subscriber: v.participant})
	msg := "the source has no tracks yet"
	for i, e := range v.f.Resolve() {
		v.participant.SubscriptionFailed(e.Track, e.Code, e.Err)
		if i == 0 {
			msg = e.Error()
		}
	}
	for _, sl := range slots {
		t := v.f.Track(sl.kind)
		if t == nil {
			continue
		}
		sl.dt = NewDownTrack(t.Codec(), string(sl.kind), "sluice")
		sender, err := v.pc.AddTrack(sl.dt)
		if err != nil {
			return api.Errorf(http.StatusBadRequest, "negotiation_failed", "cannot add %s: %v", sl.kind, err)
		}
		sl.sender = sender
		v.slots = append(v.slots, sl)
	}
	if len(v.slots) == 0 {
		return api.Errorf(http.StatusNotAcceptable, "unsupported_codec", "%s", msg)
	}
	return nil
}

func (v *viewer) watchConnection() {
	v.pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		switch st {
		case webrtc.PeerConnectionStateConnected:
			v.connOnce.Do(func() { close(v.connected) })
		case webrtc.PeerConnectionStateFailed:
			v.close(sfu.ReasonError, errors.New("ice/dtls connection failed"))
		case webrtc.PeerConnectionStateClosed:
			v.close(sfu.ReasonClientDisconnected, nil)
		default: // new, connecting, disconnected: ICE may still recover
		}
	})
}

func (v *viewer) run() {
	for _, sl := range v.slots {
		v.wg.Add(1)
		go func() {
			defer v.wg.Done()
			v.readRTCP(sl)
		}()
	}
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		v.reportLoop()
	}()
	v.serve()
	reason, err := v.cause()
	// The viewer is a consumer: leave first (subscriptions end), then release the transcoders
	// it read, then close the connection.
	v.participant.Close(reason, err)
	v.f.Close()
	_ = v.engine.ClosePC(v.pc)
	v.wg.Wait()
	v.log.Info("whep session ended", "reason", reason)
}

func (v *viewer) serve() {
	timer := time.NewTimer(connectTimeout)
	defer timer.Stop()
	select {
	case <-v.connected:
	case <-v.ctx.Done():
		return
	case <-v.participant.Done():
		v.close(v.participant.LeaveReason(), nil)
		return
	case <-timer.C:
		v.close(sfu.ReasonError, errors.New("ice/dtls did not connect"))
		return
	}
	v.routeDirect()
	g := v.engine.guard(v.pc)
	spec := sfu.StreamSpec{Direction: sfu.DirectionPlay, Protocol: sfu.ProtocolWHEP, RemoteAddr: v.participant.Info().RemoteAddr,
		Stats: func() sfu.ProtocolStats { return g.rtt(v.figures.Stats(), v.pc) }}
	if reason := v.f.Play(v.ctx, spec); reason != "" {
		v.close(reason, nil)
	}
}

// sinkClosing ends the session when a down track cannot write (the peer connection is gone).
type sinkClosing struct {
	sl *slot
	v  *viewer
}

func (s sinkClosing) WritePacket(p *sfu.Packet, gap bool) error {
	err := s.sl.dt.WritePacket(p, gap)
	if err != nil {
		s.v.close(sfu.ReasonClientDisconnected, nil)
	}
	return err
}

// readRTCP drains a sender's RTCP, turns PLI and FIR into keyframe requests and answers
// NACKs from the down track's history: each packet at most maxResends times, and none while
// the hub is congested (retransmissions would take the CPU the daemon lacks, and a viewer that
// loses packets asks for more of them: left unchecked, the daemon ends up spending its time
// resending packets that are dropped again).
func (v *viewer) readRTCP(sl *slot) {
	var lost []uint16
	est := NewEstimator()
	est.Log = v.log
	for {
		pkts, _, err := sl.sender.ReadRTCP()
		if err != nil {
			return
		}
		for _, pk := range pkts {
			switch pk := pk.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				if sub := v.f.Subscription(sl.kind); sub != nil {
					sub.RequestKeyframe()
				}
			case *rtcp.ReceiverReport:
				sl.dt.observeReports(v.figures, pk.Reports)
				if sub := v.f.Subscription(sl.kind); sub != nil {
					sl.dt.Adapt(sub, est, pk.Reports, sfu.LayerHighest)
				}
			case *rtcp.ReceiverEstimatedMaximumBitrate:
				if sub := v.f.Subscription(sl.kind); sub != nil {
					sl.dt.AdaptREMB(sub, est, float64(pk.Bitrate), sfu.LayerHighest)
				}
			case *rtcp.TransportLayerNack:
				if sub := v.f.Subscription(sl.kind); sub != nil {
					sl.dt.AdaptNACK(sub, est, sfu.LayerHighest)
				}
				if v.hub.Congested() {
					continue
				}
				lost = lost[:0]
				for _, pair := range pk.Nacks {
					pair.Range(func(seq uint16) bool { lost = append(lost, seq); return true })
				}
				sl.dt.Resend(lost)
			}
		}
	}
}
