package srt

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
)

// Fixed PIDs of the played program, kept when the program changes (a new source's codecs).
const (
	pidVideo = 256
	pidAudio = 257
)

// tsBase is the MPEG-TS time of the session's first frame (90 kHz): room below it for decode
// times before presentation times and for the PCR, which runs 100 ms ahead of the decode times.
const tsBase = 90000

// playSettle is how long a new source missing a video or audio track may take to publish it
// before a reader starts without it.
const playSettle = time.Second

// errPlayEnded ends a subscription whose session is gone.
var errPlayEnded = errors.New("srt play ended")

// play serves a reader: it joins the room as a participant of kind srt, accepts the connection
// and writes the MPEG-TS of the source (g.Identity, else the room's main publisher) until the
// connection, the participant or the server ends. The source is followed across its reconnects
// and, for the main publisher, as it changes.
func (s *Server) play(req gosrt.ConnRequest, sess *session, g ingest.Grant, audio string, log *slog.Logger) {
	remote := req.RemoteAddr().String()
	p, err := s.hub.Join(g.Room, sfu.ParticipantSpec{Identity: g.Self, Kind: sfu.ParticipantSRT, RemoteAddr: remote, RefuseDuplicate: true})
	if err != nil {
		code := gosrt.REJX_ISE
		if errors.Is(err, sfu.ErrDuplicateIdentity) {
			code = gosrt.REJX_CONFLICT
		}
		log.Info("srt play refused", "reason", err.Error())
		req.Reject(code)
		return
	}
	log = log.With("room", g.Room, "participant", p.Identity(), "direction", "play")
	conn, err := req.Accept()
	if err != nil {
		p.Close(sfu.ReasonError, err)
		return
	}
	sess.setConn(conn)
	pl := newPlayer(conn, audio, &s.panics, log)
	// Settle: a publisher announces its tracks one by one; the program should start with both.
	f := sfu.NewFollower(s.hub, sfu.FollowerSpec{Room: g.Room, Select: sfu.Selector{Identity: g.Identity}, Legs: pl.legs(),
		Subscriber: p, Settle: playSettle})
	pl.f = f
	ctx, cancel := context.WithCancel(context.Background())
	readErr := make(chan error, 1)
	go func() {
		defer cancel()
		readErr <- drain(conn) // a reader sends nothing: this ends with the connection
	}()
	log.Info("srt play started", "source", g.Identity)
	reason := f.Play(ctx, sfu.StreamSpec{Direction: sfu.DirectionPlay, Protocol: sfu.ProtocolSRT, RemoteAddr: remote, Stats: pl.stats})
	f.Close()
	pl.end()
	_ = conn.Close()
	rerr := <-readErr
	var cause error
	if reason == "" {
		reason, cause = sess.endCause(rerr)
	}
	p.Close(reason, cause)
	log.Info("srt play ended", "reason", reason, "frames", pl.frames.Load(), "write_errors", pl.writeErrs.Load())
}

// drain reads a reader's connection until it ends.
func drain(c gosrt.Conn) error {
	buf := make([]byte, 1500)
	for {
		if _, err := c.Read(buf); err != nil {
			return err
		}
	}
}

// player muxes the frames of its source's tracks into MPEG-TS (tsMuxer) on an SRT connection:
// H.264 or H.265 video, AAC or Opus audio.
// The two legs' subscriptions run on their own goroutines; mu serializes them over the readers,
// the muxer and the connection, whose writes do not block (gosrt queues them).
type player struct {
	conn   gosrt.Conn
	audio  string         // the audio the reader takes: "" for AAC and Opus, "aac" for AAC only
	panics *atomic.Uint64 // the server's count of handler panics (bugs)
	log    *slog.Logger
	f      *sfu.Follower // set before it plays; read by Switched, on its goroutine

	mu     sync.Mutex
	slots  [2]*playSlot // video, audio
	mux    tsMuxer
	codecs [2]string // the program's codecs
	expect string    // the audio codec the video slot predicts while the audio slot reads none
	epoch  int64     // unix ns of tsBase (the first frame's anchor)
	srOff  int64     // publisher clock (sender reports) to arrival time, ns
	srSet  bool
	keyed  bool // a video keyframe went out since the program was made
	ended  bool

	frames    atomic.Uint64
	writeErrs atomic.Uint64
}

// playSlot is one leg of a player: its reader and the time mapping of the track it reads.
// Its fields belong to the player's lock.
type playSlot struct {
	pl     *player
	kind   sfu.Kind
	src    *sfu.Track // what the slot reads: the published track or its conversion
	codec  sfu.Codec
	reader media.Reader
	ts     media.Unwrapper
	seq    uint16
	seqOK  bool
	rate   int64
	anchor bool
	base   int64 // extended RTP time of the anchor
	base90 int64 // its MPEG-TS time
	last90 int64 // the last decode time written
	emit   func(*media.Frame)
	asc    *mpeg4audio.AudioSpecificConfig // AAC
	au     [][]byte                        // scratch: a keyframe with the parameter sets put first
}

func newPlayer(conn gosrt.Conn, audio string, panics *atomic.Uint64, log *slog.Logger) *player {
	pl := &player{conn: conn, audio: audio, panics: panics, log: log}
	for i, k := range []sfu.Kind{sfu.KindVideo, sfu.KindAudio} {
		sl := &playSlot{pl: pl, kind: k}
		sl.emit = sl.frame
		pl.slots[i] = sl
	}
	return pl
}

// legs are what the player reads: H.264 or H.265 video (VP8, VP9 and AV1 converted to H.264),
// and AAC audio, or Opus as it is unless the reader asked for AAC (other audio converted to AAC).
func (pl *player) legs() []sfu.Leg {
	video, audio := pl.slots[0], pl.slots[1]
	return []sfu.Leg{{
		Kind:  sfu.KindVideo,
		Takes: func(c sfu.Codec) bool { return c.Name == sfu.CodecH264 || c.Name == sfu.CodecH265 },
		Convert: func(c sfu.Codec) string {
			if slices.Contains([]string{sfu.CodecVP8, sfu.CodecVP9, sfu.CodecAV1}, c.Name) {
				return sfu.CodecH264
			}
			return ""
		},
		Sink:     video,
		Switched: video.switched,
	}, {
		Kind:     sfu.KindAudio,
		Takes:    pl.audioTakes,
		Convert:  func(sfu.Codec) string { return sfu.CodecAAC },
		Sink:     audio,
		Switched: audio.switched,
	}}
}

// audioTakes reports whether the reader takes audio in codec c as it is.
func (pl *player) audioTakes(c sfu.Codec) bool {
	return c.Name == sfu.CodecAAC || (c.Name == sfu.CodecOpus && pl.audio != sfu.CodecAAC)
}

// switched points the slot at the track it reads from src, the published track: src itself or
// its conversion (the follower's goroutine, before the subscription). The video slot also
// predicts the audio the audio slot will read (the source's first audio
// track, as it is or converted to AAC), so that the program announces it from the start:
// demuxers that read the first PMT only (mediacommon's) would not see audio added later.
func (sl *playSlot) switched(src *sfu.Track) {
	pl := sl.pl
	expect := ""
	var asc *mpeg4audio.AudioSpecificConfig
	if sl.kind == sfu.KindVideo {
		for _, t := range src.Participant().Tracks() {
			if t.Kind() == sfu.KindAudio && !t.Closed() {
				expect = sfu.CodecAAC
				if pl.audioTakes(t.Codec()) {
					expect = t.Codec().Name
				}
				break
			}
		}
	}
	read := src
	if pl.f != nil {
		if t := pl.f.Track(sl.kind); t != nil {
			read = t
		}
	}
	if read.Codec().Name == sfu.CodecAAC {
		if params, err := media.ParseAAC(read.Codec()); err == nil {
			asc = &params.Config
		}
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if sl.kind == sfu.KindVideo {
		pl.expect = expect
	}
	sl.asc = asc
	sl.src, sl.codec = read, read.Codec()
	sl.reader, _ = media.NewReader(sl.codec) // the legs take only codecs it reads
	sl.ts, sl.seqOK, sl.anchor = media.Unwrapper{}, false, false
	sl.rate = int64(max(sl.codec.ClockRate, 1))
	pl.srSet = false // sender reports of another publisher: another clock
}

// WritePacket implements sfu.Sink: the packet goes through the slot's frame reader; complete
// frames are muxed. After a loss the video waits for a keyframe, which is asked for.
func (sl *playSlot) WritePacket(p *sfu.Packet, gap bool) (err error) {
	pl := sl.pl
	pl.mu.Lock()
	defer pl.mu.Unlock()
	defer func() {
		if v := recover(); v != nil {
			pl.panics.Add(1)
			pl.log.Error("BUG: panic in the srt player", "panic", v)
			pl.ended = true
			_ = pl.conn.Close()
			err = errPlayEnded
		}
	}()
	if pl.ended {
		return errPlayEnded
	}
	if sl.reader == nil {
		return nil
	}
	seq := p.Header.SequenceNumber
	lost := gap || (sl.seqOK && seq != sl.seq+1)
	sl.seq, sl.seqOK = seq, true
	ext := sl.ts.Unwrap(p.Header.Timestamp)
	if !sl.anchor {
		sl.setAnchor(ext, p.Arrival)
	}
	if (!sl.reader.Push(p, ext, lost, sl.emit) || lost) && sl.kind == sfu.KindVideo {
		sl.src.RequestKeyframe()
	}
	return nil
}

// setAnchor maps the slot's first timestamp onto the session's MPEG-TS clock: by the track's
// sender report when it has one (so that audio and video of a publisher line up as it sent
// them), else by the packet's arrival.
func (sl *playSlot) setAnchor(ext, arrival int64) {
	pl := sl.pl
	at := arrival
	if sr, ok := sl.src.SenderReport(); ok {
		srTime := sr.NTPTime.UnixNano() + int64(int32(uint32(ext)-sr.RTPTime))*1e9/sl.rate
		if !pl.srSet {
			pl.srSet, pl.srOff = true, arrival-srTime
		}
		at = srTime + pl.srOff
	}
	if pl.epoch == 0 {
		pl.epoch = at
	}
	sl.anchor, sl.base = true, ext
	sl.base90 = tsBase + (at-pl.epoch)*90000/1e9
	if sl.base90 <= sl.last90 { // a new source: time runs on
		sl.base90 = sl.last90 + 1
	}
}

// time90 converts an extended RTP time of the slot's track to MPEG-TS time.
func (sl *playSlot) time90(ext int64) int64 {
	return sl.base90 + (ext-sl.base)*90000/sl.rate
}

// frame muxes one frame (the reader's emit, under the player's lock).
func (sl *playSlot) frame(f *media.Frame) {
	pl := sl.pl
	if !pl.program() {
		return
	}
	pts := sl.time90(f.PTS)
	dts := pts - (f.PTS-f.DTS)*90000/sl.rate
	var err error
	switch sl.codec.Name {
	case sfu.CodecH264, sfu.CodecH265:
		if !pl.keyed && !f.Key {
			sl.src.RequestKeyframe()
			return
		}
		pl.keyed = true
		err = pl.mux.writeVideo(pts, dts, f.Key, sl.withParams(f))
		pl.frames.Add(1)
	case sfu.CodecAAC, sfu.CodecOpus:
		if pl.codecs[0] != "" && !pl.keyed {
			return // the stream starts with the video's keyframe
		}
		if sl.codec.Name != pl.codecs[1] || (sl.asc == nil && sl.codec.Name == sfu.CodecAAC) {
			return // not in the program
		}
		err = pl.mux.writeAudio(pts, f.Data, sl.asc)
	default:
		return // the legs take no other codec
	}
	sl.last90 = dts
	if err != nil || len(pl.mux.Out) == 0 {
		return // a frame the muxer refuses is skipped
	}
	if _, err := pl.conn.Write(pl.mux.Out); err != nil {
		// The connection is closed or its send queue is full (a reader that does not keep up):
		// closing it ends the session.
		pl.writeErrs.Add(1)
		_ = pl.conn.Close()
	}
	pl.mux.Out = pl.mux.Out[:0]
}

// withParams returns a video frame's NAL units with the reader's parameter sets first when it
// is a keyframe without them in-band (a decoder joining there needs them).
func (sl *playSlot) withParams(f *media.Frame) [][]byte {
	if !f.Key {
		return f.NALUs
	}
	sps := byte(media.H264SPS)
	if sl.codec.Name == sfu.CodecH265 {
		sps = media.H265SPS
	}
	if media.ParamSet(sl.codec.Name, f.NALUs, sps) != nil {
		return f.NALUs
	}
	ps, _ := sl.reader.Params()
	sl.au = sl.au[:0]
	for _, n := range [][]byte{ps.VPS, ps.SPS, ps.PPS} {
		if len(n) > 0 {
			sl.au = append(sl.au, n)
		}
	}
	sl.au = append(sl.au, f.NALUs...)
	return sl.au
}

// program sets the muxer's program to the codecs the slots read (for audio not read yet, the
// one predicted), again when they changed; it reports whether there is one.
func (pl *player) program() bool {
	v, a := pl.slots[0], pl.slots[1]
	want := [2]string{}
	if v.src != nil {
		want[0] = v.codec.Name
	}
	if a.src != nil {
		want[1] = a.codec.Name
	} else if want[0] != "" {
		want[1] = pl.expect
	}
	if want == pl.codecs {
		return want != [2]string{}
	}
	if want[0] != pl.codecs[0] {
		pl.keyed = false // a new video codec starts at a keyframe; audio joining does not matter
	}
	pl.codecs = want
	channels := 2
	if a.src != nil {
		channels = int(max(a.codec.Channels, 1))
	}
	pl.mux.setProgram(want[0], want[1], channels)
	return want != [2]string{}
}

// end stops the muxing: later packets end their subscriptions.
func (pl *player) end() {
	pl.mu.Lock()
	pl.ended = true
	pl.mu.Unlock()
}

// stats reads the connection's SRT statistics as the sender sees them.
func (pl *player) stats() sfu.ProtocolStats { return connStats(pl.conn, true) }
