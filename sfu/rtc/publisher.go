package rtc

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/media"
)

// postWHIP answers a WHIP offer: the publisher joins the room and each of its tracks is
// published as media arrives.
func (s *Server) postWHIP(w http.ResponseWriter, r *http.Request) {
	claims, ok := s.admit(w, r, auth.ActionPublish, sfu.ProtocolWHIP)
	if !ok {
		return
	}
	parent, pc, p, ok := s.acceptOffer(w, r, r.PathValue("room"), sfu.ParticipantWHIP, claims, preferCodecs)
	if !ok {
		return
	}
	pub := &publisher{sessionLife: newSessionLife(parent, pc, p, s.log.With("room", p.Room().Name(), "participant", p.Identity(), "protocol", "whip")),
		stats: s.engine.Stats(pc), levels: s.engine.AudioLevel}
	pc.OnTrack(pub.onTrack)
	pub.watchConnection()
	sdpAnswer, err := answer(pc, nil)
	if err != nil {
		_ = pc.Close()
		p.Close(sfu.ReasonError, err)
		api.WriteError(w, err)
		return
	}
	id, ok := s.add("whip", pub, sessionOwner(r, claims))
	if !ok {
		_ = pc.Close()
		p.Close(sfu.ReasonServerShutdown, nil)
		api.WriteError(w, api.Errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "shutting down"))
		return
	}
	pub.log.Info("whip session started")
	s.writeAnswer(w, "whip", id, pub.etag(), sdpAnswer)
}

// preferCodecs orders every receiving video transceiver's codecs H.264 first (then VP8, VP9,
// AV1, H.265) so that the publisher encodes what MP4 and RTMP take unchanged, and refuses an
// offer in which no media section has a codec we take.
func preferCodecs(pc *webrtc.PeerConnection) error {
	usable := 0
	for _, t := range pc.GetTransceivers() {
		if t.Kind() == webrtc.RTPCodecTypeVideo {
			_ = t.SetCodecPreferences(videoPreference(t))
		}
		if len(t.Receiver().GetParameters().Codecs) > 0 {
			usable++
		}
	}
	if usable == 0 {
		return api.Errorf(http.StatusNotAcceptable, "unsupported_codec",
			"no media section offers a codec sluice takes (video: H264, VP8, VP9, AV1, H265; audio: opus, PCMU, PCMA, G722)")
	}
	return nil
}

func videoPreference(t *webrtc.RTPTransceiver) []webrtc.RTPCodecParameters {
	offered := t.Receiver().GetParameters().Codecs
	var out []webrtc.RTPCodecParameters
	for _, want := range videoCodecs {
		for _, c := range offered {
			if c.MimeType == want.MimeType && (c.MimeType != webrtc.MimeTypeH264 || media.FmtpValue(c.SDPFmtpLine, "packetization-mode") == "1") &&
				!slices.ContainsFunc(out, func(o webrtc.RTPCodecParameters) bool { return o.PayloadType == c.PayloadType }) {
				out = append(out, c)
			}
		}
	}
	for _, c := range offered { // keep RTX and anything else negotiated
		if !slices.ContainsFunc(out, func(o webrtc.RTPCodecParameters) bool { return o.PayloadType == c.PayloadType }) {
			out = append(out, c)
		}
	}
	return out
}

// publisher is a WHIP session: remote tracks read into sfu tracks.
type publisher struct {
	sessionLife
	wg        sync.WaitGroup
	streamMu  sync.Mutex
	stream    *sfu.Stream
	streamErr bool
	stats     func() sfu.ProtocolStats
	levels    func(*webrtc.PeerConnection, uint32) *sfu.AudioLevel
}

func (p *publisher) run() {
	select {
	case <-p.ctx.Done():
	case <-p.participant.Done():
		p.close(p.participant.LeaveReason(), nil)
	}
	reason, err := p.cause()
	// Teardown from producer to consumers: stop reading, then leave (tracks close, viewers see it).
	_ = p.pc.Close()
	p.wg.Wait()
	p.participant.Close(reason, err)
	p.log.Info("whip session ended", "reason", reason)
}

// onTrack publishes a remote track and reads it until the session ends.
func (p *publisher) onTrack(remote *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
	codec := remote.Codec()
	name := sfu.CodecFromMime(codec.MimeType)
	if name == "" {
		p.log.Warn("ignoring a track with an unsupported codec", "mime", codec.MimeType)
		return
	}
	source := sfu.SourceMicrophone
	if remote.Kind() == webrtc.RTPCodecTypeVideo {
		source = sfu.SourceCamera
	}
	ssrc := uint32(remote.SSRC())
	pc := p.pc
	track, err := p.participant.Publish(sfu.TrackSpec{
		Codec:      sfu.Codec{Name: name, ClockRate: codec.ClockRate, Channels: codec.Channels, Fmtp: codec.SDPFmtpLine, PayloadType: uint8(codec.PayloadType)},
		Source:     source,
		Name:       remote.ID(),
		AudioLevel: p.levels(pc, ssrc),
		Keyframes: sfu.KeyframeRequesterFunc(func() {
			_ = pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}})
		}),
	})
	if err != nil {
		return // the session is ending
	}
	p.startStream()
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		ReadRTP(remote, track, p.log)
	}()
	go func() {
		defer p.wg.Done()
		ReadRTCP(recv, track)
	}()
}

func (p *publisher) startStream() {
	p.streamMu.Lock()
	defer p.streamMu.Unlock()
	if p.stream != nil || p.streamErr {
		return
	}
	// the offer's media sections are the session's track set
	expect := 0
	for _, tr := range p.pc.GetTransceivers() {
		if tr.Kind() == webrtc.RTPCodecTypeAudio || tr.Kind() == webrtc.RTPCodecTypeVideo {
			expect++
		}
	}
	st, err := p.participant.StartStream(sfu.StreamSpec{Direction: sfu.DirectionPublish, Protocol: sfu.ProtocolWHIP,
		RemoteAddr: p.participant.Info().RemoteAddr, ExpectTracks: expect, Stats: p.stats})
	if err != nil {
		p.streamErr = true
		return
	}
	p.stream = st
}

// ReadRTP copies each packet of remote once into its own buffer and writes it to track (the
// track's participant learns the video size from keyframes), until the remote track ends.
func ReadRTP(remote *webrtc.TrackRemote, track *sfu.Track, log *slog.Logger) {
	buf := make([]byte, 1500)
	codec := track.Codec().Name
	video := track.Kind() == sfu.KindVideo
	for {
		n, _, err := remote.Read(buf)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				log.Debug("track read ended", "track", track.SID(), "err", err)
			}
			return
		}
		raw := make([]byte, n)
		copy(raw, buf[:n])
		pkt := &sfu.Packet{}
		var rp rtp.Packet
		if err := rp.Unmarshal(raw); err != nil {
			continue // not RTP: count nothing, it is the sender's problem
		}
		if len(rp.Payload) == 0 {
			continue // padding only
		}
		pkt.Header, pkt.Payload = rp.Header, rp.Payload
		if video {
			pkt.Keyframe = sfu.IsKeyframe(codec, rp.Payload)
			if pkt.Keyframe {
				if w, h, ok := sfu.VideoSize(codec, rp.Payload); ok {
					_ = track.Participant().SetTrackSize(track, w, h) // track.updated when it changed
				}
			}
		}
		track.WritePacket(pkt)
	}
}

// ReadRTCP drains a receiver's RTCP (interceptors need it read) and keeps the sender reports
// that map the track's RTP clock to wall time, until the receiver stops.
func ReadRTCP(recv *webrtc.RTPReceiver, track *sfu.Track) {
	for {
		pkts, _, err := recv.ReadRTCP()
		if err != nil {
			return
		}
		for _, pk := range pkts {
			if sr, ok := pk.(*rtcp.SenderReport); ok {
				track.SetSenderReport(sfu.SenderReport{RTPTime: sr.RTPTime, NTPTime: sfu.FromNTP(sr.NTPTime)})
			}
		}
	}
}
