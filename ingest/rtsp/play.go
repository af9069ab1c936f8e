package rtsp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/pion/rtp"

	"github.com/sluice-media/sluice/sfu"
)

// player is an RTSP play session (DESCRIBE, SETUP, PLAY): a participant of kind rtsp that
// subscribes to one video and one audio track of its source (a named participant or the room's
// main publisher) and follows the source when it changes or reconnects, without the client
// noticing: sequence numbers and timestamps run on.
//
// newPlayer, play and end run on the gortsplib session's goroutine; the follower runs on its
// own goroutine owned by the server; the slots' WritePacket on the subscriptions' goroutines.
type player struct {
	s      *Server
	ss     *gortsplib.ServerSession
	t      target
	remote string
	stream *gortsplib.ServerStream
	slots  []*playSlot
	log    *slog.Logger

	participant *sfu.Participant // set by play, before the follower starts
	f           *sfu.Follower    // set by play; owned by the follower goroutine
	ctx         context.Context  // ends the follower
	cancel      context.CancelFunc
	followDone  chan struct{} // nil until play

	playing    atomic.Bool   // PLAY was accepted
	activeOnce sync.Once     // closes active
	active     chan struct{} // closed once gortsplib sends to the session
	ended      chan struct{} // closed by end: sinks stop waiting
	done       chan struct{} // closed when end returns

	mu         sync.Mutex
	stopReason string

	writeErrors atomic.Uint64
	reports     *sfu.ReportStats // from the player's receiver reports
}

// playSlot is one outgoing media of a player and its current subscription.
type playSlot struct {
	pl    *player
	kind  sfu.Kind
	media *description.Media
	pt    uint8
	codec sfu.Codec

	// Set by the follower before each subscription of the slot starts; the subscription's
	// goroutine reads src, and m/pkt/live belong to it (subscriptions of a slot never overlap:
	// the old one is closed before the next starts).
	src  *sfu.Track
	m    sfu.Munger
	pkt  rtp.Packet
	live bool
}

// errPlayerEnded ends a subscription whose session is gone.
var errPlayerEnded = errors.New("rtsp player ended")

// newPlayer makes the session's stream for t at its first SETUP.
func (s *Server) newPlayer(ss *gortsplib.ServerSession, sc *gortsplib.ServerConn, t target) (*player, *base.Response, error) {
	desc, medias, res, err := s.describe(t)
	if res != nil {
		return nil, res, err
	}
	stream := &gortsplib.ServerStream{Server: s.rtsp, Desc: desc}
	if err := stream.Initialize(); err != nil {
		return nil, &base.Response{StatusCode: base.StatusInternalServerError}, err
	}
	pl := &player{
		s: s, ss: ss, t: t, remote: remoteAddr(sc), stream: stream,
		log:    s.log.With("room", t.room, "protocol", "rtsp", "direction", "play", "remote", remoteAddr(sc)),
		active: make(chan struct{}), ended: make(chan struct{}), done: make(chan struct{}), reports: sfu.NewReportStats(),
	}
	pl.ctx, pl.cancel = context.WithCancel(context.Background())
	for _, d := range medias {
		pl.slots = append(pl.slots, &playSlot{pl: pl, kind: d.kind, media: d.media, pt: d.media.Formats[0].PayloadType(),
			codec: d.codec, m: sfu.Munger{ClockRate: d.codec.ClockRate}})
	}
	if !s.track(ss, pl) {
		pl.cancel()
		stream.Close()
		return nil, &base.Response{StatusCode: base.StatusServiceUnavailable}, errors.New("shutting down")
	}
	return pl, nil, nil
}

// play joins the room and starts following the source. Packets flow once gortsplib has made
// the session a reader of the stream (markActive), so that the keyframe the subscriptions start
// with is not lost.
func (pl *player) play() (*base.Response, error) {
	p, err := pl.s.opts.Hub.Join(pl.t.room, sfu.ParticipantSpec{Identity: pl.t.self, Kind: sfu.ParticipantRTSP, RemoteAddr: pl.remote})
	if err != nil {
		return &base.Response{StatusCode: base.StatusServiceUnavailable}, fmt.Errorf("joining room %s: %w", pl.t.room, err)
	}
	pl.participant = p
	pl.log = pl.log.With("participant", p.Identity())
	legs := make([]sfu.Leg, 0, len(pl.slots))
	for _, sl := range pl.slots {
		legs = append(legs, sfu.Leg{
			Kind:  sl.kind,
			Takes: sl.codec.Same,
			Sink:  sl,
			Switched: func(src *sfu.Track) {
				sl.src = src
				sl.m.Switch() // continue numbering across the switch
			},
		})
	}
	for _, sl := range pl.slots {
		pl.ss.OnPacketRTCP(sl.media, sl.observeReports)
	}
	pl.f = sfu.NewFollower(pl.s.opts.Hub, sfu.FollowerSpec{Room: pl.t.room, Select: sfu.Selector{Identity: pl.t.identity}, Legs: legs, Subscriber: p})
	pl.followDone = make(chan struct{})
	pl.playing.Store(true)
	pl.s.wg.Add(1)
	go func() {
		defer pl.s.wg.Done()
		defer close(pl.followDone)
		pl.follow()
	}()
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// batch has a player over TCP (interleaved) with video write a video frame and the audio
// that came meanwhile at a time: one system call instead of one per packet (see batchConn).
func (pl *player) batch(sc *gortsplib.ServerConn) {
	bc, ok := sc.NetConn().(*batchConn)
	tr := pl.ss.SetuppedTransport()
	if !ok || tr == nil || *tr != gortsplib.TransportTCP {
		return
	}
	video := false
	for _, sl := range pl.slots {
		video = video || sl.kind == sfu.KindVideo
	}
	if !video {
		return // nothing would carry the audio out
	}
	for _, sl := range pl.slots {
		bc.hold(sl.pt, sl.kind == sfu.KindVideo)
	}
}

// markActive lets packets flow; called after gortsplib answered PLAY.
func (pl *player) markActive() {
	if pl.playing.Load() {
		pl.activeOnce.Do(func() { close(pl.active) })
	}
}

// follow keeps every slot subscribed to the current source's track of its kind until the
// session ends.
func (pl *player) follow() {
	defer pl.f.Close()
	spec := sfu.StreamSpec{Direction: sfu.DirectionPlay, Protocol: sfu.ProtocolRTSP, RemoteAddr: pl.remote, Stats: pl.stats}
	if reason := pl.f.Play(pl.ctx, spec); reason != "" {
		pl.stopAsync(reason)
	}
}

// WritePacket implements sfu.Sink: the packet goes to the session's stream with the slot's
// payload type and continuous numbering. It allocates nothing of its own (gortsplib marshals
// each packet into a new buffer).
func (sl *playSlot) WritePacket(p *sfu.Packet, gap bool) error {
	pl := sl.pl
	if !sl.live {
		select {
		case <-pl.active:
			sl.live = true
		case <-pl.ended:
			return errPlayerEnded
		}
	}
	now := pl.s.clock()
	h := &sl.pkt.Header
	*h = p.Header
	h.PayloadType = sl.pt
	h.CSRC = nil
	h.Extension, h.Extensions, h.ExtensionProfile = false, nil, 0
	h.Padding, h.PaddingSize = false, 0
	ntp := packetNTP(sl.src, p.Header.Timestamp, sl.codec.ClockRate, now)
	if !sl.m.Rewrite(h, gap, now) {
		return nil // from before the switch: it would reuse a number
	}
	sl.pkt.Payload = p.Payload
	return pl.stream.WritePacketRTPWithNTP(sl.media, &sl.pkt, ntp)
}

// packetNTP is the wall-clock time of a packet from its track's sender report (now without one),
// so that the RTCP sender reports of the stream let players align audio and video.
func packetNTP(t *sfu.Track, ts, clockRate uint32, now time.Time) time.Time {
	if t == nil || clockRate == 0 {
		return now
	}
	sr, ok := t.SenderReport()
	if !ok {
		return now
	}
	d := int64(int32(ts - sr.RTPTime))
	return sr.NTPTime.Add(time.Duration(d * int64(time.Second) / int64(clockRate)))
}

func (pl *player) ingestID() string { return "" }

func (pl *player) stopAsync(reason string) {
	pl.mu.Lock()
	if pl.stopReason == "" {
		pl.stopReason = reason
	}
	pl.mu.Unlock()
	pl.ss.Close()
}

func (pl *player) stop(reason string) {
	pl.stopAsync(reason)
	<-pl.done
}

// end stops the follower, leaves the room (the subscriptions end) and closes the stream.
func (pl *player) end(err error) {
	defer close(pl.done)
	close(pl.ended)
	pl.cancel()
	if pl.followDone != nil {
		<-pl.followDone
	}
	pl.mu.Lock()
	stopReason := pl.stopReason
	pl.mu.Unlock()
	reason, cause := sessionEndReason(err, stopReason)
	if pl.participant != nil {
		pl.participant.Close(reason, cause)
		pl.log.Info("rtsp player ended", "reason", reason, "err", cause, "write_errors", pl.writeErrors.Load())
	}
	pl.stream.Close()
}
