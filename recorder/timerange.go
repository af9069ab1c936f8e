package recorder

import (
	"context"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"

	"github.com/sluice-media/sluice/sfu/api"
)

// Span is a stretch of time for which a room (a participant) has recorded media.
type Span struct {
	Start       time.Time `json:"start"`
	End         time.Time `json:"end"`
	DurationMs  int64     `json:"duration_ms"`
	Participant string    `json:"participant"`
	Recording   string    `json:"recording"`
}

// piece is the part of one file inside a playback window.
type piece struct {
	m        *Recording
	i        int
	from, to time.Time
}

// spans returns the mp4 files of a room's recordings (one participant's when given) as time
// spans, oldest first.
func (r *Recorder) spans(room, participant string) []piece {
	var out []piece
	for _, m := range r.List(room, "") {
		for i, f := range m.Files {
			if i >= len(m.Details) || mediaFormat(m.Details[i].Name) != "mp4" || f.DurationMs <= 0 {
				continue
			}
			if participant != "" && m.Details[i].Participant != participant {
				continue
			}
			out = append(out, piece{m: m, i: i, from: f.StartedAt, to: f.StartedAt.Add(time.Duration(f.DurationMs) * time.Millisecond)})
		}
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].from.Before(out[b].from) })
	return out
}

func (p piece) participant() string { return p.m.Details[p.i].Participant }

// httpPlaybackList serves GET /v1/playback/list?room=R[&participant=P]: the recorded spans.
func (r *Recorder) httpPlaybackList(gate *api.Gate) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		q := req.URL.Query()
		room := q.Get("room")
		if room == "" {
			api.WriteError(w, api.Errorf(http.StatusBadRequest, api.CodeBadRequest, "room is required"))
			return
		}
		if !allowed(gate, w, req, room) {
			return
		}
		out := []Span{}
		for _, p := range r.spans(room, q.Get("participant")) {
			out = append(out, Span{Start: p.from, End: p.to, DurationMs: p.to.Sub(p.from).Milliseconds(), Participant: p.participant(), Recording: p.m.ID})
		}
		api.WriteJSON(w, http.StatusOK, map[string]any{"spans": out})
	}
}

// httpPlayback serves GET /v1/playback?room=R[&participant=P]&start=RFC3339&duration=D: one
// fMP4 of the window made of the recordings that cover it, each cut at the keyframe at or
// before the window's start and at its end, one after the other without the gaps between
// them. X-Sluice-Spans lists the covered spans and X-Sluice-Gaps the uncovered ones
// (start/end in RFC 3339, comma-separated). Without a participant, the first one recorded in
// the window is played.
func (r *Recorder) httpPlayback(gate *api.Gate) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		q := req.URL.Query()
		room := q.Get("room")
		start, err := time.Parse(time.RFC3339Nano, q.Get("start"))
		if room == "" || err != nil {
			api.WriteError(w, api.Errorf(http.StatusBadRequest, api.CodeBadRequest, "room and start (RFC 3339) are required"))
			return
		}
		dur, err := parseDuration("duration", q.Get("duration"))
		if err != nil || dur == 0 {
			api.WriteError(w, api.Errorf(http.StatusBadRequest, api.CodeBadRequest, "duration: a positive duration such as 90s is required"))
			return
		}
		if !allowed(gate, w, req, room) {
			return
		}
		end := start.Add(dur)
		participant := q.Get("participant")
		var pieces []piece
		for _, p := range r.spans(room, participant) {
			if !p.to.After(start) || !p.from.Before(end) {
				continue
			}
			if participant == "" {
				participant = p.participant()
			} else if p.participant() != participant {
				continue
			}
			p.from, p.to = later(p.from, start), earlier(p.to, end)
			pieces = append(pieces, p)
		}
		if len(pieces) == 0 {
			api.WriteError(w, api.Errorf(http.StatusNotFound, api.CodeNotFound, "nothing of room %s was recorded in that window", room))
			return
		}
		r.writePlayback(req.Context(), w, pieces, start, end)
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// openPiece is a piece with its file open and indexed.
type openPiece struct {
	piece
	src  mediaFile
	x    *fileIndex
	init *fmp4.Init
}

func (r *Recorder) writePlayback(ctx context.Context, w http.ResponseWriter, pieces []piece, start, end time.Time) {
	var open []*openPiece
	defer func() {
		for _, o := range open {
			_ = o.src.Close()
		}
	}()
	var initBytes []byte
	for _, p := range pieces {
		src, size, _, err := r.openMedia(ctx, p.m, p.i)
		if err != nil {
			continue // a file gone from disk and storage: a gap
		}
		o := &openPiece{piece: p, src: src, x: r.index(p.m, p.i, src, size)}
		open = append(open, o)
		b, in, err := readInit(src, o.x)
		if err != nil || (len(open) > 1 && !sameTracks(open[0].init, in)) {
			open = open[:len(open)-1] // other tracks than the first file: left out, stated as a gap
			_ = src.Close()
			continue
		}
		o.init = in
		if initBytes == nil {
			initBytes = b
		}
	}
	if len(open) == 0 {
		api.WriteError(w, api.Errorf(http.StatusNotFound, api.CodeNotFound, "the recordings of that window cannot be read"))
		return
	}
	var spans, gaps []string
	at := start
	for _, o := range open {
		if o.from.Sub(at) > time.Second {
			gaps = append(gaps, at.UTC().Format(time.RFC3339Nano)+"/"+o.from.UTC().Format(time.RFC3339Nano))
		}
		spans = append(spans, o.from.UTC().Format(time.RFC3339Nano)+"/"+o.to.UTC().Format(time.RFC3339Nano))
		at = o.to
	}
	if end.Sub(at) > time.Second {
		gaps = append(gaps, at.UTC().Format(time.RFC3339Nano)+"/"+end.UTC().Format(time.RFC3339Nano))
	}
	w.Header().Set("Content-Type", "video/mp4")
	w.Header().Set("X-Sluice-Spans", strings.Join(spans, ","))
	w.Header().Set("X-Sluice-Gaps", strings.Join(gaps, ","))
	w.Header().Set("Content-Disposition", `inline; filename="playback.mp4"`)
	if _, err := w.Write(initBytes); err != nil {
		return
	}
	cat := &concat{init: open[0].init, seq: 1}
	for _, o := range open {
		if err := cat.add(o, w); err != nil {
			r.log.Warn("playback cut short", "recording", o.m.ID, "err", err)
			return
		}
	}
}

// concat writes the fragments of several files as one fMP4 timeline, in ticks per track.
type concat struct {
	init *fmp4.Init
	seq  uint32
	// base is where the next piece starts on the output timeline.
	base time.Duration
}

func (c *concat) scale(id int) uint32 { return trackScale(c.init, id) }

func (c *concat) isVideo(id int) bool {
	for _, t := range c.init.Tracks {
		if t.ID == id {
			return t.Codec.IsVideo()
		}
	}
	return false
}

func ticks(d time.Duration, scale uint32) int64 { return int64(d) * int64(scale) / int64(time.Second) }

func dur(t int64, scale uint32) time.Duration {
	return time.Duration(t * int64(time.Second) / int64(scale))
}

// add writes the samples of o's window: video from the last keyframe at or before the cut (the
// first keyframe when there is none before), audio from that time, all before the window's end.
func (c *concat) add(o *openPiece, w http.ResponseWriter) error {
	cutFrom := o.from.Sub(o.m.Files[o.i].StartedAt)
	cutTo := o.to.Sub(o.m.Files[o.i].StartedAt)
	var parts fmp4.Parts
	for _, f := range o.x.frags {
		if time.Duration(f.endMs)*time.Millisecond <= cutFrom || time.Duration(f.startMs)*time.Millisecond >= cutTo {
			continue
		}
		b := make([]byte, f.end-f.off)
		if err := readAt(o.src, b, f.off); err != nil {
			return err
		}
		var ps fmp4.Parts
		if err := ps.Unmarshal(b); err != nil {
			return err
		}
		parts = append(parts, ps...)
	}
	// The origin: the last video keyframe at or before cutFrom.
	origin := time.Duration(-1)
	hasVideo := false
	for _, p := range parts {
		for _, t := range p.Tracks {
			if !c.isVideo(t.ID) {
				continue
			}
			hasVideo = true
			dts := int64(t.BaseTime)
			for _, s := range t.Samples {
				at := dur(dts, c.scale(t.ID))
				if !s.IsNonSyncSample && (at <= cutFrom || origin < 0) {
					origin = at
				}
				dts += int64(s.Duration)
			}
		}
	}
	if !hasVideo {
		origin = cutFrom
	}
	if origin < 0 {
		return nil // no keyframe in the window
	}
	var pieceEnd time.Duration
	for _, p := range parts {
		out := &fmp4.Part{SequenceNumber: c.seq}
		for _, t := range p.Tracks {
			sc := c.scale(t.ID)
			dts := int64(t.BaseTime)
			var kept []*fmp4.Sample
			var first int64 = -1
			for _, s := range t.Samples {
				at := dur(dts, sc)
				if at >= origin && at < cutTo {
					if first < 0 {
						first = dts
					}
					kept = append(kept, s)
					pieceEnd = max(pieceEnd, dur(dts+int64(s.Duration), sc)-origin)
				}
				dts += int64(s.Duration)
			}
			if len(kept) > 0 {
				base := ticks(c.base, sc) + first - ticks(origin, sc)
				out.Tracks = append(out.Tracks, &fmp4.PartTrack{ID: t.ID, BaseTime: uint64(max(base, 0)), Samples: kept})
			}
		}
		if len(out.Tracks) == 0 {
			continue
		}
		var buf seekablebuffer.Buffer
		if err := out.Marshal(&buf); err != nil {
			return err
		}
		if _, err := w.Write(buf.Bytes()); err != nil {
			return err
		}
		c.seq++
	}
	c.base += pieceEnd
	return nil
}
