package recorder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	"github.com/minio/minio-go/v7"

	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/auth"
)

// media is an open recording file: local, or the uploaded object (ranged GETs).
type mediaFile interface {
	io.ReadSeeker
	io.ReaderAt
	io.Closer
}

// openMedia opens file i of m: the local copy when present, else the uploaded object.
func (r *Recorder) openMedia(ctx context.Context, m *Recording, i int) (mediaFile, int64, time.Time, error) {
	name := filepath.Base(m.Files[i].Path)
	if p, err := r.FilePath(m.ID, name); err == nil {
		f, err := os.Open(p) //nolint:gosec // resolved inside the recordings directory
		if err == nil {
			st, err := f.Stat()
			if err != nil {
				_ = f.Close()
				return nil, 0, time.Time{}, errors.New(pathless(err))
			}
			return f, st.Size(), st.ModTime(), nil
		}
	}
	if m.Files[i].UploadedAt == nil || m.Upload == nil || i >= len(m.Details) {
		return nil, 0, time.Time{}, fmt.Errorf("%w: the file is gone from disk and was not uploaded", ErrNotFound)
	}
	st := r.stores[m.Upload.Target]
	if st == nil {
		return nil, 0, time.Time{}, fmt.Errorf("%w: storage target %q is not configured", ErrNotFound, m.Upload.Target)
	}
	obj, err := st.client.GetObject(ctx, st.t.Bucket, m.Details[i].ObjectKey, minio.GetObjectOptions{})
	if err != nil {
		return nil, 0, time.Time{}, s3Error(err)
	}
	info, err := obj.Stat()
	if err != nil {
		_ = obj.Close()
		return nil, 0, time.Time{}, s3Error(err)
	}
	return obj, info.Size, info.LastModified, nil
}

// fragment is one moof+mdat of a file: its bytes and its time from the start of the file.
type fragment struct {
	off, end       int64
	startMs, endMs int64
}

// fileIndex is the layout of an fMP4 file: the init section (ftyp+moov) and the fragments.
type fileIndex struct {
	initEnd int64
	frags   []fragment
}

// indexCache keeps file indexes by recording, file and size (a growing file is indexed again).
type indexCache struct {
	mu sync.Mutex
	m  map[string]*fileIndex
}

func (c *indexCache) get(key string) *fileIndex {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[key]
}

func (c *indexCache) put(key string, x *fileIndex) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) > 512 {
		c.m = map[string]*fileIndex{}
	}
	c.m[key] = x
}

// index returns the layout of file i of m.
func (r *Recorder) index(m *Recording, i int, src io.ReaderAt, size int64) *fileIndex {
	key := m.ID + "/" + m.Files[i].Path + "/" + strconv.FormatInt(size, 10)
	if x := r.indexes.get(key); x != nil {
		return x
	}
	x := &fileIndex{initEnd: -1}
	var last int64
	_, _, _ = walkFMP4(src, size, func(off, end, durationMs int64) {
		if x.initEnd < 0 {
			x.initEnd = off
		}
		x.frags = append(x.frags, fragment{off: off, end: end, startMs: last, endMs: durationMs})
		last = durationMs
	})
	r.indexes.put(key, x)
	return x
}

// allowed checks the subscribe grant for room (or admin); open mode takes loopback clients as
// the admin API does. It writes the refusal.
func allowed(gate *api.Gate, w http.ResponseWriter, req *http.Request, room string) bool {
	if gate.OpenMode() {
		ok := false
		gate.Admin(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { ok = true })).ServeHTTP(w, req)
		return ok
	}
	if _, err := gate.Check(api.RequestToken(req), auth.ActionSubscribe, room, "http", req.RemoteAddr); err != nil {
		api.WriteError(w, api.HTTPError(err))
		return false
	}
	return true
}

// recordingFor looks up the recording of a playback URL and checks the caller may watch it.
func (r *Recorder) recordingFor(gate *api.Gate, w http.ResponseWriter, req *http.Request) *Recording {
	m, err := r.Get(req.PathValue("id"))
	if err != nil {
		api.WriteError(w, apiError(err))
		return nil
	}
	if !allowed(gate, w, req, m.Room) {
		return nil
	}
	return m
}

// participantFiles returns the indexes of the mp4 files of a participant ("" for the first
// file's) in time order.
func participantFiles(m *Recording, participant string) []int {
	var out []int
	for i := range m.Files {
		if i >= len(m.Details) || mediaFormat(m.Details[i].Name) != "mp4" {
			continue
		}
		if participant == "" {
			participant = m.Details[i].Participant
		}
		if m.Details[i].Participant == participant {
			out = append(out, i)
		}
	}
	sort.SliceStable(out, func(a, b int) bool { return m.Files[out[a]].StartedAt.Before(m.Files[out[b]].StartedAt) })
	return out
}

// hlsFile is one file of a recording's HLS timeline.
type hlsFile struct {
	i    int
	x    *fileIndex
	init *fmp4.Init
	// base is where the file starts on the timeline; mapAt is the file whose init it uses.
	base  time.Duration
	mapAt int
}

// hlsLayout indexes the files of a participant ("" for the first) and lays them end to end: a
// file whose tracks match the previous file's continues its timeline and init, another starts
// a discontinuity with its own init.
func (r *Recorder) hlsLayout(ctx context.Context, m *Recording, participant string) ([]hlsFile, error) {
	var out []hlsFile
	var at time.Duration
	for _, i := range participantFiles(m, participant) {
		src, size, _, err := r.openMedia(ctx, m, i)
		if err != nil {
			return nil, err
		}
		x := r.index(m, i, src, size)
		var in *fmp4.Init
		if len(x.frags) > 0 {
			_, in, err = readInit(src, x)
		}
		_ = src.Close()
		if len(x.frags) == 0 || err != nil {
			continue
		}
		f := hlsFile{i: i, x: x, init: in, base: at, mapAt: i}
		if n := len(out); n > 0 && sameTracks(out[n-1].init, in) {
			f.mapAt = out[n-1].mapAt
		} else {
			f.base = 0
		}
		at = f.base + time.Duration(x.frags[len(x.frags)-1].endMs)*time.Millisecond
		out = append(out, f)
	}
	return out, nil
}

// httpHLS serves a recording as an HLS playlist (RFC 8216) of fMP4 segments: one segment per
// fragment of its files, laid end to end on one timeline (hls/{file}-{fragment}.m4s, rebased
// by hlsSegment), with one init section (hls/init-{file}.mp4). A running recording's playlist
// has no EXT-X-ENDLIST.
func (r *Recorder) httpHLS(gate *api.Gate) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		m := r.recordingFor(gate, w, req)
		if m == nil {
			return
		}
		files, err := r.hlsLayout(req.Context(), m, req.URL.Query().Get("participant"))
		if err != nil {
			api.WriteError(w, apiError(err))
			return
		}
		if len(files) == 0 {
			api.WriteError(w, api.Errorf(http.StatusNotFound, api.CodeNotFound, "no mp4 file in this recording for HLS (mkv recordings are downloaded whole)"))
			return
		}
		suffix := ""
		if tok := req.URL.Query().Get("access_token"); tok != "" {
			suffix = "?access_token=" + url.QueryEscape(tok)
		}
		var body strings.Builder
		target := 1
		for n, f := range files {
			if n == 0 || f.mapAt != files[n-1].mapAt {
				if n > 0 {
					body.WriteString("#EXT-X-DISCONTINUITY\n")
				}
				fmt.Fprintf(&body, "#EXT-X-MAP:URI=\"hls/init-%d.mp4%s\"\n", f.mapAt, suffix)
			}
			for j, fr := range f.x.frags {
				d := float64(fr.endMs-fr.startMs) / 1000
				target = max(target, int(d+0.999))
				fmt.Fprintf(&body, "#EXTINF:%.3f,\nhls/%d-%d.m4s%s\n", d, f.i, j, suffix)
			}
		}
		var b strings.Builder
		b.WriteString("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n")
		fmt.Fprintf(&b, "#EXT-X-TARGETDURATION:%d\n#EXT-X-MEDIA-SEQUENCE:0\n", target)
		if m.Terminal() {
			b.WriteString("#EXT-X-PLAYLIST-TYPE:VOD\n")
		} else {
			b.WriteString("#EXT-X-PLAYLIST-TYPE:EVENT\n")
		}
		b.WriteString(body.String())
		if m.Terminal() {
			b.WriteString("#EXT-X-ENDLIST\n")
		}
		w.Header().Set("Content-Type", "application/vnd.apple.mpegurl")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = io.WriteString(w, b.String())
	}
}

// httpHLSPart serves an init section or a segment of the HLS timeline.
func (r *Recorder) httpHLSPart(gate *api.Gate) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		m := r.recordingFor(gate, w, req)
		if m == nil {
			return
		}
		name := req.PathValue("part")
		var fi, fj int
		isInit := false
		if _, err := fmt.Sscanf(name, "init-%d.mp4", &fi); err == nil {
			isInit = true
		} else if _, err := fmt.Sscanf(name, "%d-%d.m4s", &fi, &fj); err != nil {
			api.WriteError(w, api.Errorf(http.StatusNotFound, api.CodeNotFound, "no such HLS part"))
			return
		}
		files, err := r.hlsLayout(req.Context(), m, fileParticipant(m, fi))
		if err != nil {
			api.WriteError(w, apiError(err))
			return
		}
		var f *hlsFile
		for k := range files {
			if files[k].i == fi {
				f = &files[k]
			}
		}
		if f == nil || (!isInit && fj >= len(f.x.frags)) {
			api.WriteError(w, api.Errorf(http.StatusNotFound, api.CodeNotFound, "no such HLS part"))
			return
		}
		src, _, _, err := r.openMedia(req.Context(), m, fi)
		if err != nil {
			api.WriteError(w, apiError(err))
			return
		}
		defer func() { _ = src.Close() }()
		var out []byte
		if isInit {
			out, _, err = readInit(src, f.x)
		} else {
			out, err = rebaseFragment(src, f.x.frags[fj], f.init, f.base, uint32(fj+1)) //nolint:gosec // fragment counts fit
		}
		if err != nil {
			api.WriteError(w, api.Errorf(http.StatusInternalServerError, api.CodeInternal, "reading the recording: %v", err))
			return
		}
		w.Header().Set("Content-Type", "video/mp4")
		_, _ = w.Write(out)
	}
}

// readAt fills b from off; a reader that reports io.EOF with b full (an object's last bytes)
// has read it.
func readAt(src io.ReaderAt, b []byte, off int64) error {
	n, err := src.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	return err
}

// fileParticipant is the participant of file i (or "").
func fileParticipant(m *Recording, i int) string {
	if i >= 0 && i < len(m.Details) {
		return m.Details[i].Participant
	}
	return ""
}

// rebaseFragment reads one fragment and moves it by base on the timeline.
func rebaseFragment(src io.ReaderAt, f fragment, in *fmp4.Init, base time.Duration, seq uint32) ([]byte, error) {
	b := make([]byte, f.end-f.off)
	if err := readAt(src, b, f.off); err != nil {
		return nil, err
	}
	var ps fmp4.Parts
	if err := ps.Unmarshal(b); err != nil {
		return nil, err
	}
	var buf seekablebuffer.Buffer
	for _, p := range ps {
		p.SequenceNumber = seq
		for _, t := range p.Tracks {
			t.BaseTime += uint64(ticks(base, trackScale(in, t.ID))) //nolint:gosec // base is not negative
		}
		if err := p.Marshal(&buf); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

func trackScale(in *fmp4.Init, id int) uint32 {
	for _, t := range in.Tracks {
		if t.ID == id {
			return t.TimeScale
		}
	}
	return 90000
}

// httpFile serves a recording's file with Range support, so players can seek: the local copy,
// or the uploaded object once the local one is deleted.
func (r *Recorder) httpFile(gate *api.Gate) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		m := r.recordingFor(gate, w, req)
		if m == nil {
			return
		}
		name := req.PathValue("name")
		i := -1
		for j, f := range m.Files {
			if filepath.Base(f.Path) == name {
				i = j
			}
		}
		if i < 0 {
			api.WriteError(w, api.Errorf(http.StatusNotFound, api.CodeNotFound, "no such file in this recording"))
			return
		}
		src, _, mod, err := r.openMedia(req.Context(), m, i)
		if err != nil {
			api.WriteError(w, api.Errorf(http.StatusNotFound, api.CodeNotFound, "%v", err))
			return
		}
		defer func() { _ = src.Close() }()
		w.Header().Set("Content-Type", contentType(name))
		w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
		http.ServeContent(w, req, name, mod, src)
	}
}

// readInit returns a file's init section and its decoded tracks.
func readInit(src io.ReaderAt, x *fileIndex) ([]byte, *fmp4.Init, error) {
	if x.initEnd <= 0 || x.initEnd > maxScanBox {
		return nil, nil, errScan
	}
	b := make([]byte, x.initEnd)
	if err := readAt(src, b, 0); err != nil {
		return nil, nil, err
	}
	var in fmp4.Init
	if err := in.Unmarshal(bytes.NewReader(b)); err != nil {
		return nil, nil, err
	}
	return b, &in, nil
}

// sameTracks reports whether two inits can share one output: same track ids, timescales and
// kinds.
func sameTracks(a, b *fmp4.Init) bool {
	if len(a.Tracks) != len(b.Tracks) {
		return false
	}
	for i := range a.Tracks {
		x, y := a.Tracks[i], b.Tracks[i]
		if x.ID != y.ID || x.TimeScale != y.TimeScale || x.Codec.IsVideo() != y.Codec.IsVideo() {
			return false
		}
	}
	return true
}
