package rtc

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
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
	roomName, identity := r.PathValue("room"), r.PathValue("identity")
	room := s.hub.Room(roomName)
	if room == nil {
		api.WriteError(w, api.Errorf(http.StatusNotFound, api.CodeNotFound, "room %q not found", roomName))
		return
	}
	source := sourceOf(room, identity)
	if source == nil {
		what := "no one is publishing video in room " + roomName
		if identity != "" {
			what = fmt.Sprintf("participant %q is not in room %q", identity, roomName)
		}
		api.WriteError(w, api.Errorf(http.StatusNotFound, "no_publisher", "%s", what))
		return
	}
	offer, err := readOffer(w, r)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	parent, ok := s.sessionContext(r)
	if !ok {
		return
	}
	pc, err := s.engine.newPeerConnection()
	if err != nil {
		api.WriteError(w, err)
		return
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		_ = pc.Close()
		api.WriteError(w, api.Errorf(http.StatusBadRequest, "invalid_sdp", "the offer was refused: %v", err))
		return
	}
	spec := sfu.ParticipantSpec{Kind: sfu.ParticipantWebRTC, RemoteAddr: r.RemoteAddr}
	if claims != nil {
		spec.Identity, spec.Name = claims.Identity, claims.Name
	}
	p, err := s.hub.Join(roomName, spec)
	if err != nil {
		_ = pc.Close()
		api.WriteError(w, api.Errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "cannot join: %v", err))
		return
	}
	v := &viewer{
		sessionLife: newSessionLife(parent, pc, p, s.log.With("room", roomName, "participant", p.Identity(), "protocol", "whep")),
		room:        room,
		identity:    identity,
		connected:   make(chan struct{}),
	}
	if err := v.attach(source); err != nil {
		_ = pc.Close()
		p.Close(sfu.ReasonError, err)
		api.WriteError(w, err)
		return
	}
	v.watchConnection()
	sdpAnswer, err := answer(pc, nil)
	if err != nil {
		_ = pc.Close()
		p.Close(sfu.ReasonError, err)
		api.WriteError(w, err)
		return
	}
	id, ok := s.add(v)
	if !ok {
		_ = pc.Close()
		p.Close(sfu.ReasonServerShutdown, nil)
		api.WriteError(w, api.Errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "shutting down"))
		return
	}
	v.log.Info("whep session started", "session", id, "source", source.Identity())
	s.writeAnswer(w, "whep", id, v.etag(), sdpAnswer)
}

// sourceOf returns the participant a viewer plays: the named one, else the main publisher.
func sourceOf(room *sfu.Room, identity string) *sfu.Participant {
	if identity != "" {
		return room.Participant(identity)
	}
	return room.MainPublisher()
}

// viewer is a WHEP session: one down track per kind, following the source across reconnects
// and changes of main publisher.
type viewer struct {
	sessionLife
	room      *sfu.Room
	identity  string
	slots     []*slot
	wg        sync.WaitGroup
	connected chan struct{}
	connOnce  sync.Once
}

// slot is one outgoing track of the viewer and its current subscription.
type slot struct {
	kind   sfu.Kind
	dt     *DownTrack
	sender *webrtc.RTPSender
	sub    atomic.Pointer[sfu.Subscription]
	// had is set once the slot subscribed: a later subscription continues its numbering, also
	// after a time without source (a camera reconnecting). Owned by the session's serve loop.
	had bool
}

// attach adds a down track for each of source's tracks that the viewer's offer can carry;
// each other track gets track.subscription_failed.
func (v *viewer) attach(source *sfu.Participant) error {
	offered := map[webrtc.RTPCodecType][]webrtc.RTPCodecParameters{}
	for _, t := range v.pc.GetTransceivers() {
		offered[t.Kind()] = append(offered[t.Kind()], t.Receiver().GetParameters().Codecs...)
	}
	var failures []string
	for _, kind := range []sfu.Kind{sfu.KindVideo, sfu.KindAudio} {
		track := firstTrack(source, kind)
		if track == nil {
			continue
		}
		dt := NewDownTrack(track.Codec(), string(kind), "sluice")
		if !CanCarry(track.Codec(), offered[dt.Kind()]) {
			err := fmt.Errorf("the viewer cannot receive %s %s (transcoding not available)", kind, track.Codec().Name)
			v.participant.SubscriptionFailed(track, "codec_not_supported", err)
			failures = append(failures, err.Error())
			continue
		}
		sender, err := v.pc.AddTrack(dt)
		if err != nil {
			return api.Errorf(http.StatusBadRequest, "negotiation_failed", "cannot add %s: %v", kind, err)
		}
		v.slots = append(v.slots, &slot{kind: kind, dt: dt, sender: sender})
	}
	if len(v.slots) == 0 {
		msg := "the source has no tracks yet"
		if len(failures) > 0 {
			msg = failures[0]
		}
		return api.Errorf(http.StatusNotAcceptable, "unsupported_codec", "%s", msg)
	}
	return nil
}

func firstTrack(p *sfu.Participant, kind sfu.Kind) *sfu.Track {
	if p == nil {
		return nil
	}
	for _, t := range p.Tracks() {
		if t.Kind() == kind {
			return t
		}
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
	v.serve()
	reason, err := v.cause()
	// The viewer is a consumer: leave first (subscriptions end), then close the connection.
	v.participant.Close(reason, err)
	_ = v.pc.Close()
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
	stream, err := v.participant.StartStream(sfu.StreamSpec{Direction: sfu.DirectionPlay, Protocol: sfu.ProtocolWHEP, RemoteAddr: v.participant.Info().RemoteAddr})
	if err != nil {
		return
	}
	for {
		changed := v.room.Changed()
		if reason := v.follow(); reason != "" {
			stream.End(reason, nil)
			v.close(reason, nil)
			return
		}
		select {
		case <-changed:
		case <-v.ctx.Done():
			return
		case <-v.participant.Done():
			v.close(v.participant.LeaveReason(), nil)
			return
		}
	}
}

// follow points every slot at the current source's track of its kind. It returns a reason to
// end the session when the new source cannot be played without renegotiation.
func (v *viewer) follow() string {
	source := sourceOf(v.room, v.identity)
	for _, sl := range v.slots {
		want := firstTrack(source, sl.kind)
		cur := sl.sub.Load()
		if cur != nil && want == cur.Track() && !want.Closed() {
			continue
		}
		if cur != nil {
			v.participant.Unsubscribe(cur)
			sl.sub.Store(nil)
		}
		if want == nil {
			continue // wait for a publisher
		}
		if c := want.Codec(); c.Name != sl.dt.codec.Name || c.ClockRate != sl.dt.codec.ClockRate {
			v.log.Info("source changed codec; ending the session", "from", sl.dt.codec.Name, "to", c.Name)
			return sfu.ReasonSourceChanged
		}
		if sl.had {
			sl.dt.Switch()
		}
		sub, err := v.participant.Subscribe(want, sinkClosing{sl.dt, v}, sfu.SubscribeOptions{})
		if err != nil {
			continue // the track ended meanwhile; the room change will bring us back here
		}
		sl.sub.Store(sub)
		sl.had = true
	}
	return ""
}

// sinkClosing ends the session when a down track cannot write (the peer connection is gone).
type sinkClosing struct {
	dt *DownTrack
	v  *viewer
}

func (s sinkClosing) WritePacket(p *sfu.Packet, gap bool) error {
	err := s.dt.WritePacket(p, gap)
	if err != nil {
		s.v.close(sfu.ReasonClientDisconnected, nil)
	}
	return err
}

// readRTCP drains a sender's RTCP and turns PLI and FIR into keyframe requests.
func (v *viewer) readRTCP(sl *slot) {
	for {
		pkts, _, err := sl.sender.ReadRTCP()
		if err != nil {
			return
		}
		for _, pk := range pkts {
			switch pk.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				if sub := sl.sub.Load(); sub != nil {
					sub.RequestKeyframe()
				}
			}
		}
	}
}
