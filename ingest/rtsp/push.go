package rtsp

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
	"github.com/pion/rtp"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/sfu"
)

// publisher is an RTSP push session (ANNOUNCE, SETUP, RECORD): a participant of kind rtsp
// whose tracks are the announced medias in a codec sluice takes.
//
// announce and record run on the gortsplib session's goroutine, and so does end (from
// OnSessionClose); stop may be called from any goroutine.
type publisher struct {
	s      *Server
	ss     *gortsplib.ServerSession
	t      target
	remote string
	inputs []*input
	log    *slog.Logger

	participant *sfu.Participant // session goroutine only
	done        chan struct{}    // closed by end

	mu         sync.Mutex
	stopReason string

	lost         atomic.Uint64
	decodeErrors atomic.Uint64

	// The session's figures, sampled on the goroutine that delivers its packets: gortsplib's
	// ServerSession.Stats read from another goroutine races with the end of the session, which
	// stops its formats before OnSessionClose (and after that goroutine's last callback).
	stats     atomic.Pointer[gortsplib.StatsSession]
	nextStats int64 // unix nanoseconds; the delivering goroutine only
}

// statsEvery is how often the publisher samples its session's figures.
const statsEvery = time.Second

// announce admits a publisher whose SDP has at least one track sluice takes.
func (s *Server) announce(ctx *gortsplib.ServerHandlerOnAnnounceCtx, t target) (*base.Response, error) {
	log := s.log.With("room", t.room, "protocol", "rtsp", "remote", remoteAddr(ctx.Conn))
	inputs, unsupported := buildInputs(ctx.Description, s.clock, log)
	if len(inputs) == 0 {
		return &base.Response{StatusCode: base.StatusUnsupportedMediaType},
			fmt.Errorf("%w (the publisher offers %s)", ErrNoTracks, strings.Join(unsupported, ", "))
	}
	pub := &publisher{s: s, ss: ctx.Session, t: t, remote: remoteAddr(ctx.Conn), inputs: inputs, log: log, done: make(chan struct{})}
	if !s.track(ctx.Session, pub) {
		return &base.Response{StatusCode: base.StatusServiceUnavailable}, errors.New("shutting down")
	}
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// record joins the room, publishes the tracks and starts reading the packets.
func (pub *publisher) record() (*base.Response, error) {
	p, err := pub.s.opts.Hub.Join(pub.t.room, sfu.ParticipantSpec{
		Identity:   pub.t.identity,
		Kind:       sfu.ParticipantRTSP,
		RemoteAddr: pub.remote,
	})
	if err != nil {
		return &base.Response{StatusCode: base.StatusServiceUnavailable}, fmt.Errorf("joining room %s: %w", pub.t.room, err)
	}
	pub.participant = p
	pub.log = pub.log.With("participant", p.Identity())
	for _, in := range pub.inputs {
		t, err := p.Publish(in.trackSpec())
		if err == nil {
			err = in.attach(t)
		}
		if err != nil {
			return &base.Response{StatusCode: base.StatusInternalServerError}, err
		}
		pub.ss.OnPacketRTP(in.media, in.format, func(pkt *rtp.Packet) {
			in.onRTP(pkt)
			pub.sampleStats(in.lastPacketAt.Load())
		})
		pub.ss.OnPacketRTCP(in.media, in.onRTCP)
	}
	if _, err := p.StartStream(sfu.StreamSpec{
		Direction: sfu.DirectionPublish,
		Protocol:  sfu.ProtocolRTSP,
		// every track of the SDP is published above
		ExpectTracks: len(pub.inputs),
		RemoteAddr:   pub.remote,
		Stats:        pub.protocolStats,
	}); err != nil {
		return &base.Response{StatusCode: base.StatusServiceUnavailable}, err
	}
	// The room may end the participant (kick, room deleted, duplicate identity): then the RTSP
	// session ends too.
	pub.s.wg.Add(1)
	go func() {
		defer pub.s.wg.Done()
		select {
		case <-p.Done():
			pub.stopAsync(p.LeaveReason())
		case <-pub.done:
		}
	}()
	if pub.t.ingestType == ingest.TypeRTSPPush {
		pub.s.opts.Ingests.SetState(pub.t.ingestID, ingest.StateConnected, 0, "", nil)
	}
	pub.log.Info("rtsp publisher started", "tracks", len(pub.inputs))
	return &base.Response{StatusCode: base.StatusOK}, nil
}

func (pub *publisher) ingestID() string { return pub.t.ingestID }

// sampleStats keeps the session's figures once per statsEvery; it runs on the goroutine that
// delivers the session's RTP packets, with the arrival time of the last one.
func (pub *publisher) sampleStats(now int64) {
	if now < pub.nextStats {
		return
	}
	pub.nextStats = now + int64(statsEvery)
	pub.stats.Store(pub.ss.Stats())
}

// protocolStats returns the stream.stats figures of the last sample; safe for concurrent use.
func (pub *publisher) protocolStats() sfu.ProtocolStats {
	st := pub.stats.Load()
	if st == nil {
		st = &gortsplib.StatsSession{}
	}
	return receivedStats(st, pub.lost.Load())
}

// stopAsync closes the session with reason without waiting.
func (pub *publisher) stopAsync(reason string) {
	pub.mu.Lock()
	if pub.stopReason == "" {
		pub.stopReason = reason
	}
	pub.mu.Unlock()
	pub.ss.Close()
}

// stop closes the session with reason and waits until it has ended.
func (pub *publisher) stop(reason string) {
	pub.stopAsync(reason)
	<-pub.done
}

// end releases the participant: its tracks end, then it leaves.
func (pub *publisher) end(err error) {
	pub.mu.Lock()
	stopReason := pub.stopReason
	pub.mu.Unlock()
	reason, cause := sessionEndReason(err, stopReason)
	if pub.participant != nil {
		pub.participant.Close(reason, cause)
		if pub.t.ingestType == ingest.TypeRTSPPush {
			pub.s.opts.Ingests.SetState(pub.t.ingestID, ingest.StateDisconnected, 0, reason, cause)
		}
		pub.log.Info("rtsp publisher ended", "reason", reason, "err", cause,
			"packets_lost", pub.lost.Load(), "decode_errors", pub.decodeErrors.Load()+inputErrors(pub.inputs))
	}
	close(pub.done)
}

func inputErrors(inputs []*input) uint64 {
	var n uint64
	for _, in := range inputs {
		n += in.decodeErrors.Load()
	}
	return n
}

// sessionEndReason maps why gortsplib ended a session to the reason of participant.left (and
// an error for stream.failed when it is not a normal end).
func sessionEndReason(err error, stopReason string) (string, error) {
	switch {
	case stopReason != "":
		return stopReason, nil
	case errors.As(err, new(liberrors.ErrServerTerminated)):
		return sfu.ReasonServerShutdown, nil
	case errors.As(err, new(liberrors.ErrServerSessionTornDown)),
		errors.As(err, new(liberrors.ErrServerSessionNotInUse)):
		return sfu.ReasonClientDisconnected, nil
	case errors.As(err, new(liberrors.ErrServerSessionTimedOut)):
		return sfu.ReasonNoMediaTimeout, errors.New("no packets for read_timeout")
	case err == nil:
		return sfu.ReasonClientDisconnected, nil
	}
	return sfu.ReasonError, err
}
