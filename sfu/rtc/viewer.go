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
	if s.hub.Overloaded() {
		w.Header().Set("Retry-After", "10")
		api.WriteError(w, api.Errorf(http.StatusServiceUnavailable, "overloaded", "the server is at its CPU budget; try again later"))
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
	parent, pc, p, ok := s.acceptOffer(w, r, roomName, sfu.ParticipantWebRTC, claims, nil)
	if !ok {
		return
	}
	v := &viewer{
		sessionLife: newSessionLife(parent, pc, p, s.log.With("room", roomName, "participant", p.Identity(), "protocol", "whep")),
		engine:      s.engine,
		hub:         s.hub,
		room:        room,
		identity:    identity,
		connected:   make(chan struct{}),
	}
	if err := v.attach(source); err != nil {
		_ = pc.Close()
		p.Close(sfu.ReasonError, err)
		v.releaseAll()
		api.WriteError(w, err)
		return
	}
	v.watchConnection()
	sdpAnswer, err := answer(pc, nil)
	if err != nil {
		_ = pc.Close()
		p.Close(sfu.ReasonError, err)
		v.releaseAll()
		api.WriteError(w, err)
		return
	}
	id, ok := s.add("whep", v)
	if !ok {
		_ = pc.Close()
		p.Close(sfu.ReasonServerShutdown, nil)
		v.releaseAll()
		api.WriteError(w, api.Errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "shutting down"))
		return
	}
	v.log.Info("whep session started", "source", source.Identity())
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
// and changes of main publisher. A source track in a codec the viewer cannot take is played
// through the hub's transcoder (AAC as Opus, VP8/VP9/H.265 as H.264).
type viewer struct {
	sessionLife
	engine    *Engine
	hub       *sfu.Hub
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

	// The source track the slot plays and, when its codec is not the negotiated one, its
	// transcoded form with the release of the conversion. Owned by the session's goroutine
	// (the request's before the session runs).
	src     *sfu.Track
	conv    *sfu.Track
	release func()
	// failed is a source track whose transcoder stopped while the source went on: reported
	// once, not transcoded again.
	failed *sfu.Track
	// had is set once the slot subscribed: a later subscription continues its numbering, also
	// after a time without source (a camera reconnecting). Owned by the session's serve loop.
	had bool
}

// dropConversion releases the slot's transcoded track, if any.
func (sl *slot) dropConversion() {
	if sl.release != nil {
		sl.release()
	}
	sl.conv, sl.release = nil, nil
}

// transcodeTarget is the codec a track the viewer cannot take is converted to.
func transcodeTarget(kind sfu.Kind) string {
	if kind == sfu.KindVideo {
		return sfu.CodecH264
	}
	return sfu.CodecOpus
}

// attach adds a down track for each of source's tracks that the viewer's offer can carry, as
// is or transcoded; each other track gets track.subscription_failed.
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
		sl := &slot{kind: kind, src: track}
		codec := track.Codec()
		rtpKind := webrtc.RTPCodecTypeAudio
		if kind == sfu.KindVideo {
			rtpKind = webrtc.RTPCodecTypeVideo
		}
		if !CanCarry(codec, offered[rtpKind]) {
			out, release, err := v.transcode(track, offered[rtpKind])
			if err != nil {
				code := "codec_not_supported"
				if errors.Is(err, sfu.ErrNoTranscoder) {
					code = "transcoder_unavailable"
				}
				v.participant.SubscriptionFailed(track, code, err)
				failures = append(failures, err.Error())
				continue
			}
			sl.conv, sl.release, codec = out, release, out.Codec()
		}
		sl.dt = NewDownTrack(codec, string(kind), "sluice")
		sender, err := v.pc.AddTrack(sl.dt)
		if err != nil {
			sl.dropConversion()
			return api.Errorf(http.StatusBadRequest, "negotiation_failed", "cannot add %s: %v", kind, err)
		}
		sl.sender = sender
		v.slots = append(v.slots, sl)
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

// transcode gets track converted into the codec a viewer takes instead (Opus for audio, H.264
// for video), when the viewer offered it.
func (v *viewer) transcode(track *sfu.Track, offered []webrtc.RTPCodecParameters) (*sfu.Track, func(), error) {
	kind, from, to := track.Kind(), track.Codec().Name, transcodeTarget(track.Kind())
	if !CanCarry(sfu.Codec{Name: to}, offered) {
		return nil, nil, fmt.Errorf("the viewer cannot receive %s %s (nor %s to transcode it to)", kind, from, to)
	}
	out, release, err := v.hub.Transcode(track, to)
	if err != nil {
		return nil, nil, fmt.Errorf("the viewer cannot receive %s %s and it cannot be transcoded to %s: %w", kind, from, to, err)
	}
	if !CanCarry(out.Codec(), offered) {
		release()
		return nil, nil, fmt.Errorf("the viewer cannot receive %s %s, nor the transcoder's %s", kind, from, out.Codec().Name)
	}
	return out, release, nil
}

// releaseAll releases the slots' conversions, once the session's subscriptions ended.
func (v *viewer) releaseAll() {
	for _, sl := range v.slots {
		sl.dropConversion()
	}
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
	v.releaseAll()
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
	v.routeDirect()
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

// follow points every slot at the current source's track of its kind, transcoded when its codec
// is not the one negotiated. It returns a reason to end the session when the new source cannot
// be played without renegotiation.
func (v *viewer) follow() string {
	source := sourceOf(v.room, v.identity)
	for _, sl := range v.slots {
		want := firstTrack(source, sl.kind)
		cur := sl.sub.Load()
		if cur != nil && want == sl.src && !cur.Track().Closed() {
			continue
		}
		if cur != nil {
			v.participant.Unsubscribe(cur)
			sl.sub.Store(nil)
		}
		if sl.conv != nil && (want != sl.src || sl.conv.Closed()) {
			if want == sl.src && !want.Closed() {
				// The transcoder stopped, not the source (it gave up on it): do not start it
				// again and again; the slot stays idle until the source changes.
				sl.failed = want
				v.participant.SubscriptionFailed(want, "transcoder_failed", errors.New("the transcoder stopped converting this track"))
			}
			sl.dropConversion()
		}
		sl.src = want
		if want == nil || want == sl.failed {
			continue // wait for a publisher
		}
		feed := want
		if c := want.Codec(); !sameCodec(c, sl.dt.codec) {
			if sl.conv == nil {
				out, release, err := v.hub.Transcode(want, sl.dt.codec.Name)
				if err == nil && !sameCodec(out.Codec(), sl.dt.codec) {
					release()
					err = fmt.Errorf("the transcoder makes %s/%d, not the negotiated %s/%d", out.Codec().Name, out.Codec().ClockRate, sl.dt.codec.Name, sl.dt.codec.ClockRate)
				}
				if err != nil {
					if want.Closed() {
						continue // the track ended meanwhile; the room change will bring us back here
					}
					v.participant.SubscriptionFailed(want, "codec_not_supported",
						fmt.Errorf("the source changed to %s %s, which cannot be transcoded to the negotiated %s: %w", sl.kind, c.Name, sl.dt.codec.Name, err))
					v.log.Info("source changed codec; ending the session", "from", sl.dt.codec.Name, "to", c.Name, "err", err)
					return sfu.ReasonSourceChanged
				}
				sl.conv, sl.release = out, release
			}
			feed = sl.conv
		}
		if sl.had {
			sl.dt.Switch()
		}
		sub, err := v.participant.Subscribe(feed, sinkClosing{sl.dt, v}, sfu.SubscribeOptions{})
		if err != nil {
			continue // the track ended meanwhile; the room change will bring us back here
		}
		sl.sub.Store(sub)
		sl.had = true
	}
	return ""
}

// sameCodec reports whether a track in codec c can feed a down track made for codec dt.
func sameCodec(c, dt sfu.Codec) bool {
	return c.Name == dt.Name && c.ClockRate == dt.ClockRate
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

// readRTCP drains a sender's RTCP, turns PLI and FIR into keyframe requests and answers
// NACKs from the down track's history: each packet at most maxResends times, and none while
// the hub is congested (retransmissions would take the CPU the daemon lacks, and a viewer that
// loses packets asks for more of them: left unchecked, the daemon ends up spending its time
// resending packets that are dropped again).
func (v *viewer) readRTCP(sl *slot) {
	var lost []uint16
	for {
		pkts, _, err := sl.sender.ReadRTCP()
		if err != nil {
			return
		}
		for _, pk := range pkts {
			switch pk := pk.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				if sub := sl.sub.Load(); sub != nil {
					sub.RequestKeyframe()
				}
			case *rtcp.TransportLayerNack:
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
