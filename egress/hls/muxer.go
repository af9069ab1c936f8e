package hls

import (
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gohlslib/v2"
	"github.com/bluenviron/gohlslib/v2/pkg/codecs"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
)

// muxer is the LL-HLS stream of one source: a participant of kind hls that follows the source
// (sfu.Follower), reads its tracks' frames (sfu/media) and writes them to a gohlslib muxer,
// which answers the HTTP requests. A source change (the publisher reconnected, the main
// publisher changed) starts a new gohlslib muxer: players load the playlist again.
//
// run and rebind run on the muxer's goroutine; the legs' sinks on their subscriptions'
// goroutines (writes to the gohlslib muxer are serialized by wmu); handle on HTTP goroutines.
type muxer struct {
	s    *Server
	key  muxerKey
	log  *slog.Logger
	last atomic.Int64 // unix nanoseconds of the last request
	busy atomic.Int64 // requests being answered (a blocking playlist request may wait long)

	f    *sfu.Follower    // owned by run's goroutine
	p    *sfu.Participant // set by run
	subs []*sfu.Subscription

	mu    sync.Mutex
	cur   *generation   // nil while there is nothing to play
	ready chan struct{} // closed when cur is set
	ended bool

	encodeErrors atomic.Uint64
}

// generation is one gohlslib muxer over one set of tracks.
type generation struct {
	mux     *gohlslib.Muxer
	wmu     sync.Mutex // serializes writes (one sink per leg)
	epochNs int64      // the wall time of timestamp 0 (set by the first frame, under wmu)
}

func newMuxer(s *Server, k muxerKey) *muxer {
	m := &muxer{s: s, key: k, ready: make(chan struct{})}
	m.log = s.log.With("room", k.room, "protocol", sfu.ProtocolHLS)
	if k.identity != "" {
		m.log = m.log.With("source", k.identity)
	}
	m.touch()
	return m
}

func (m *muxer) touch() { m.last.Store(m.s.opts.Hub.Now().UnixNano()) }

// legs are what the muxer reads: H.264, H.265 or VP9 video as it is (VP8 converted to H.264),
// AAC audio as it is and Opus as it is for players that take it, else converted to AAC.
func (m *muxer) legs() []sfu.Leg {
	video := sfu.Leg{Kind: sfu.KindVideo,
		Takes: func(c sfu.Codec) bool {
			return c.Name == sfu.CodecH264 || c.Name == sfu.CodecH265 || c.Name == sfu.CodecVP9
		},
		Convert: func(c sfu.Codec) string {
			if c.Name == sfu.CodecVP8 {
				return sfu.CodecH264
			}
			return ""
		}}
	audio := sfu.Leg{Kind: sfu.KindAudio,
		Takes: func(c sfu.Codec) bool { return c.Name == sfu.CodecAAC || (c.Name == sfu.CodecOpus && !m.key.aac) },
		Convert: func(c sfu.Codec) string {
			if c.Name == sfu.CodecOpus {
				return sfu.CodecAAC
			}
			return ""
		}}
	return []sfu.Leg{video, audio}
}

// run joins the room, follows the source until the muxer is idle for the configured time, the
// server stops or the source cannot be played, then leaves.
func (m *muxer) run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer m.end()
	p, err := m.s.opts.Hub.Join(m.key.room, sfu.ParticipantSpec{Kind: sfu.ParticipantHLS})
	if err != nil {
		m.log.Warn("hls muxer: cannot join the room", "err", err)
		return
	}
	m.p = p
	m.log = m.log.With("participant", p.Identity())
	m.f = sfu.NewFollower(m.s.opts.Hub, sfu.FollowerSpec{Room: m.key.room, Select: sfu.Selector{Identity: m.key.identity},
		Legs: m.legs(), Subscriber: p, Settle: time.Second, OnChange: m.rebind})
	idle := make(chan struct{})
	go func() { // stops the muxer when nobody asked for a while
		defer close(idle)
		timeout := m.s.opts.Config.IdleTimeout
		t := time.NewTicker(timeout / 4)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if m.busy.Load() == 0 && m.s.opts.Hub.Now().Sub(time.Unix(0, m.last.Load())) >= timeout {
					m.log.Info("hls muxer idle: stopping", "idle_timeout", timeout)
					cancel()
					return
				}
			}
		}
	}()
	m.log.Info("hls muxer started")
	reason := m.follow(ctx)
	cancel()
	<-idle
	m.unbind()
	m.f.Close()
	switch {
	case reason != "":
	case m.s.base.Err() != nil:
		reason = sfu.ReasonServerShutdown
	default:
		reason = sfu.ReasonClientDisconnected // nobody asked for idle_timeout
	}
	p.Close(reason, nil)
	m.log.Info("hls muxer stopped", "reason", reason, "encode_errors", m.encodeErrors.Load())
}

// follow runs the muxer's play stream (stream.playing) with an Update at every change until ctx
// ends ("") or the participant is removed (its leave reason). Unlike sfu.Follower.Play, a track
// that cannot be read is only left out (track.subscription_failed): the stream ends
// (source_changed) when the source has no track left to play.
func (m *muxer) follow(ctx context.Context) string {
	stream, err := m.p.StartStream(sfu.StreamSpec{Direction: sfu.DirectionPlay, Protocol: sfu.ProtocolHLS})
	if err != nil {
		return m.p.LeaveReason()
	}
	for {
		changed := m.f.Changed()
		problems := m.f.Update()
		for _, e := range problems {
			m.p.SubscriptionFailed(e.Track, e.Code, e.Err)
		}
		if len(problems) > 0 && m.f.Track(sfu.KindVideo) == nil && m.f.Track(sfu.KindAudio) == nil {
			stream.End(sfu.ReasonSourceChanged, nil)
			return sfu.ReasonSourceChanged
		}
		select {
		case <-changed:
		case <-m.f.Recheck(): // a new source's settle time is over
		case <-ctx.Done():
			return ""
		case <-m.p.Done():
			return m.p.LeaveReason()
		}
	}
}

// end marks the muxer ended: requests waiting for media return.
func (m *muxer) end() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ended = true
	if m.cur == nil {
		close(m.ready)
	}
}

// unbind ends the subscriptions (waiting for their sinks) and closes the gohlslib muxer.
func (m *muxer) unbind() {
	for _, sub := range m.subs {
		m.p.Unsubscribe(sub)
	}
	m.subs = nil
	m.mu.Lock()
	g := m.cur
	if g != nil {
		m.cur, m.ready = nil, make(chan struct{})
	}
	m.mu.Unlock()
	if g != nil {
		g.mux.Close()
	}
}

// rebind starts a gohlslib muxer on the follower's current tracks (the follower's OnChange).
func (m *muxer) rebind(problems []sfu.LegError) {
	for _, e := range problems {
		m.log.Warn("hls muxer: track left out", "kind", e.Kind, "code", e.Code, "err", e.Err)
	}
	m.unbind()
	g := &generation{}
	var legs []*leg
	for _, kind := range []sfu.Kind{sfu.KindVideo, sfu.KindAudio} {
		t := m.f.Track(kind)
		if t == nil {
			continue
		}
		l, err := newLeg(m, g, t)
		if err != nil {
			m.log.Warn("hls muxer: track left out", "kind", kind, "err", err)
			continue
		}
		legs = append(legs, l)
	}
	if len(legs) == 0 {
		return
	}
	cfg := m.s.opts.Config
	g.mux = &gohlslib.Muxer{
		Variant:            gohlslib.MuxerVariantLowLatency,
		SegmentCount:       cfg.SegmentCount,
		SegmentMinDuration: cfg.SegmentDuration,
		PartMinDuration:    cfg.PartDuration,
		OnEncodeError: func(err error) {
			if m.encodeErrors.Add(1) == 1 {
				m.log.Warn("hls muxer: encode error (counted from now on)", "err", err)
			}
		},
	}
	for _, l := range legs {
		g.mux.Tracks = append(g.mux.Tracks, l.track)
	}
	if err := g.mux.Start(); err != nil {
		m.log.Warn("hls muxer: cannot start", "err", err)
		return
	}
	for _, l := range legs {
		sub, err := m.p.Subscribe(l.src, sfu.SinkFunc(l.write), sfu.SubscribeOptions{})
		if err != nil {
			continue // the track ended meanwhile: the room change brings us back
		}
		m.subs = append(m.subs, sub)
	}
	m.mu.Lock()
	m.cur = g
	close(m.ready)
	m.mu.Unlock()
}

// requestWait bounds how long a request waits for the muxer to have media.
const requestWait = 10 * time.Second

// handle answers a request from the current gohlslib muxer, waiting for one while the source
// is being bound.
func (m *muxer) handle(w http.ResponseWriter, r *http.Request) {
	m.busy.Add(1)
	defer m.busy.Add(-1)
	t := time.NewTimer(requestWait)
	defer t.Stop()
	var g *generation
	for {
		m.mu.Lock()
		cur, ready, ended := m.cur, m.ready, m.ended
		m.mu.Unlock()
		if g = cur; g != nil {
			break
		}
		if ended {
			http.Error(w, "the stream ended", http.StatusNotFound)
			return
		}
		select {
		case <-ready:
		case <-r.Context().Done():
			return
		case <-t.C:
			http.Error(w, "the source has no media yet", http.StatusServiceUnavailable)
			return
		}
	}
	m.touch()
	rw := &trackingWriter{ResponseWriter: w}
	g.mux.Handle(rw, r)
	m.touch() // a request counts when it ends too
	if !rw.wrote {
		http.Error(w, "no such file (the stream was restarted: load index.m3u8 again)", http.StatusNotFound)
	}
}

// trackingWriter notes whether gohlslib answered (it writes nothing for a path it does not know).
type trackingWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *trackingWriter) WriteHeader(code int) {
	w.wrote = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *trackingWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// leg reads one track into one track of a generation; its state belongs to the subscription's
// goroutine.
type leg struct {
	m     *muxer
	g     *generation
	src   *sfu.Track
	codec string
	clock int64
	track *gohlslib.Track
	r     media.Reader
	ts    media.Unwrapper
	seq   uint16
	seqOK bool
	emit  func(*media.Frame)
	// the track's clock on the wall clock: the sender report's, else the first frame's arrival
	anchorSet           bool
	anchorExt, anchorNs int64
	arrival             int64
	nalus               [][]byte
	// keyframe requests: a segment ends only at a keyframe, and WebRTC publishers send one only
	// when asked
	lastKey, lastAsk int64 // wall nanoseconds
	keyEvery         int64
}

func newLeg(m *muxer, g *generation, t *sfu.Track) (*leg, error) {
	c := t.Codec()
	r, err := media.NewReader(c)
	if err != nil {
		return nil, err
	}
	l := &leg{m: m, g: g, src: t, codec: c.Name, clock: int64(c.ClockRate), r: r, keyEvery: int64(m.s.opts.Config.SegmentDuration)}
	l.emit = l.writeFrame
	switch c.Name {
	case sfu.CodecH264:
		l.track = &gohlslib.Track{Codec: &codecs.H264{}, ClockRate: int(c.ClockRate)}
	case sfu.CodecH265:
		l.track = &gohlslib.Track{Codec: &codecs.H265{}, ClockRate: int(c.ClockRate)}
	case sfu.CodecVP9:
		l.track = &gohlslib.Track{Codec: &codecs.VP9{}, ClockRate: int(c.ClockRate)}
	case sfu.CodecOpus:
		ch := int(c.Channels)
		if ch == 0 {
			ch = 2
		}
		l.track = &gohlslib.Track{Codec: &codecs.Opus{ChannelCount: ch}, ClockRate: int(c.ClockRate)}
	case sfu.CodecAAC:
		a, err := media.ParseAAC(c)
		if err != nil {
			return nil, err
		}
		l.track = &gohlslib.Track{Codec: &codecs.MPEG4Audio{Config: a.Config}, ClockRate: int(c.ClockRate)}
	default:
		return nil, media.ErrNoReader
	}
	return l, nil
}

// write takes the track's packets (the subscription's goroutine). After a loss the reader waits
// for the next keyframe, which is asked for at once.
func (l *leg) write(p *sfu.Packet, gap bool) error {
	seq := p.Header.SequenceNumber
	lost := gap || (l.seqOK && seq != l.seq+1)
	l.seq, l.seqOK = seq, true
	l.arrival = p.Arrival
	ext := l.ts.Unwrap(p.Header.Timestamp)
	if !l.r.Push(p, ext, lost, l.emit) || lost {
		if l.src.Kind() == sfu.KindVideo {
			l.src.RequestKeyframe()
		}
	}
	return nil
}

// writeFrame puts a frame on the muxer's common timeline (the wall clock from its epoch, in the
// track's clock) and hands gohlslib a copy (it keeps parameter sets and audio frames).
func (l *leg) writeFrame(f *media.Frame) {
	if !l.anchorSet {
		l.anchorSet = true
		l.anchorExt, l.anchorNs = f.PTS, l.arrival
		if sr, ok := l.src.SenderReport(); ok && !sr.NTPTime.IsZero() {
			l.anchorExt, l.anchorNs = l.ts.At(sr.RTPTime), sr.NTPTime.UnixNano()
		}
	}
	wall := l.anchorNs + (f.PTS-l.anchorExt)*int64(time.Second)/l.clock
	if l.src.Kind() == sfu.KindVideo {
		switch {
		case f.Key:
			l.lastKey = wall
		case wall-l.lastKey > 2*l.keyEvery && wall-l.lastAsk > l.keyEvery:
			l.lastAsk = wall
			l.src.RequestKeyframe()
		}
	}
	data := bytes.Clone(f.Data)
	g := l.g
	g.wmu.Lock()
	defer g.wmu.Unlock()
	if g.epochNs == 0 {
		g.epochNs = wall - int64(time.Second) // earlier frames of the other track stay positive
	}
	pts := (wall - g.epochNs) * l.clock / int64(time.Second)
	ntp := time.Unix(0, wall)
	var err error
	switch l.codec {
	case sfu.CodecH264:
		err = g.mux.WriteH264(l.track, ntp, pts, l.split(data))
	case sfu.CodecH265:
		err = g.mux.WriteH265(l.track, ntp, pts, l.split(data))
	case sfu.CodecVP9:
		err = g.mux.WriteVP9(l.track, ntp, pts, data)
	case sfu.CodecOpus:
		err = g.mux.WriteOpus(l.track, ntp, pts, [][]byte{data})
	case sfu.CodecAAC:
		err = g.mux.WriteMPEG4Audio(l.track, ntp, pts, [][]byte{data})
	}
	if err != nil && l.m.encodeErrors.Add(1) == 1 {
		l.m.log.Warn("hls muxer: frame refused (counted from now on)", "err", err)
	}
}

// split returns the NAL units of an AVCC access unit (4-byte lengths).
func (l *leg) split(avcc []byte) [][]byte {
	l.nalus = l.nalus[:0]
	for len(avcc) >= 4 {
		n := int(binary.BigEndian.Uint32(avcc))
		if n == 0 || n > len(avcc)-4 {
			break
		}
		l.nalus = append(l.nalus, avcc[4:4+n])
		avcc = avcc[4+n:]
	}
	return l.nalus
}
