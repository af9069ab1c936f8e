// Package rectest makes real media for recording tests and checks recordings: sources encoded
// once by ffmpeg, packetized into RTP by gortsplib (independent of the recorder's own code), fed
// in real time, and files verified with ffprobe and a full ffmpeg decode. It is imported only by
// tests (the recorder's, and the end-to-end tests of every ingest).
package rectest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph265"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpvp8"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4"
	"github.com/pion/rtp"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// Real media for the tests, encoded once per test binary by ffmpeg and turned into RTP packets
// with gortsplib's Packetizers (an implementation independent of ours).

var (
	mediaOnce sync.Map // name → *sync.Once
	mediaMu   sync.Mutex
)

// cacheDir holds the generated sources, shared by the test binaries of every package (ffmpeg's
// output for the same arguments is the same).
func cacheDir() string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("sluice-rectest-%d", os.Getuid()))
}

// ffmpegSource runs ffmpeg once for name with args (output path appended) and returns the path.
func ffmpegSource(t testing.TB, name string, args ...string) string {
	t.Helper()
	ff := sfutest.RequireTool(t, "ffmpeg")
	out := filepath.Join(cacheDir(), name)
	o, _ := mediaOnce.LoadOrStore(name, &sync.Once{})
	var runErr error
	o.(*sync.Once).Do(func() {
		if _, err := os.Stat(out); err == nil {
			return
		}
		if err := os.MkdirAll(cacheDir(), 0o750); err != nil {
			runErr = err
			return
		}
		tmp := fmt.Sprintf("%s.%d.tmp%s", out, os.Getpid(), filepath.Ext(out))
		cmd := exec.Command(ff, append(append([]string{"-v", "error", "-y"}, args...), tmp)...)
		if b, err := cmd.CombinedOutput(); err != nil {
			runErr = fmt.Errorf("ffmpeg %s: %w\n%s", name, err, b)
			_ = os.Remove(tmp)
			return
		}
		runErr = os.Rename(tmp, out) // atomic: another test binary may be making it too
	})
	if runErr != nil {
		t.Fatal(runErr)
	}
	if _, err := os.Stat(out); err != nil {
		t.Fatalf("source %s was not generated", name)
	}
	return out
}

func ticksToNs(ticks int64, clock uint32) int64 {
	c := int64(clock)
	return ticks/c*int64(time.Second) + ticks%c*int64(time.Second)/c
}

// Sample is one access unit or audio frame with its times in the track's clock.
type Sample struct {
	PTS, DTS int64
	Key      bool
	Data     []byte // AVCC for H.264/H.265, raw otherwise
}

// Track is one track of a source file.
type Track struct {
	Codec   sfu.Codec
	Clock   uint32
	Samples []Sample
	Init    *fmp4.InitTrack
}

// H264Opus is H.264 with B-frames (1 s GOP) and Opus, seconds long.
func H264Opus(t testing.TB, seconds int, bframes int) (video, audio *Track) {
	name := fmt.Sprintf("h264-opus-%ds-bf%d.mp4", seconds, bframes)
	profile := "high"
	if bframes == 0 {
		profile = "baseline" // what WebRTC publishers send
	}
	p := ffmpegSource(t, name, "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", strconv.Itoa(seconds), "-c:v", "libx264", "-preset", "veryfast", "-profile:v", profile, "-g", "30", "-bf", strconv.Itoa(bframes), "-pix_fmt", "yuv420p",
		"-c:a", "libopus", "-b:a", "48k", "-movflags", "frag_keyframe+empty_moov+default_base_moof+negative_cts_offsets", "-f", "mp4")
	tracks := ReadFMP4(t, p)
	return tracks[0], tracks[1]
}

// ColourH264Opus is a plain colour picture (an ffmpeg colour name) as H.264 Constrained
// Baseline (1 s GOP), and a sine tone of freq Hz as Opus, seconds long: a participant whose
// picture and sound a composite's output can be checked for.
func ColourH264Opus(t testing.TB, seconds int, colour string, freq int) (video, audio *Track) {
	name := fmt.Sprintf("colour-%s-%dhz-%ds.mp4", colour, freq, seconds)
	p := ffmpegSource(t, name, "-f", "lavfi", "-i", "color=c="+colour+":size=320x240:rate=30", "-f", "lavfi", "-i", fmt.Sprintf("sine=frequency=%d:sample_rate=48000", freq),
		"-t", strconv.Itoa(seconds), "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "baseline", "-g", "30", "-pix_fmt", "yuv420p",
		"-c:a", "libopus", "-b:a", "48k", "-movflags", "frag_keyframe+empty_moov+default_base_moof", "-f", "mp4")
	tracks := ReadFMP4(t, p)
	return tracks[0], tracks[1]
}

// H264AACFile is the path of an MP4 with H.264 (3 B-frames, 1 s GOP) and AAC-LC at 44.1 kHz,
// seconds long: what an RTMP or RTSP publisher test streams with `ffmpeg -re -i FILE -c copy`.
func H264AACFile(t testing.TB, seconds int) string {
	return ffmpegSource(t, fmt.Sprintf("h264-aac-%ds.mp4", seconds), "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=300:sample_rate=44100",
		"-t", strconv.Itoa(seconds), "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-bf", "3", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", "64k", "-movflags", "frag_keyframe+empty_moov+default_base_moof+negative_cts_offsets", "-f", "mp4")
}

// H264AAC is the tracks of H264AACFile.
func H264AAC(t testing.TB, seconds int) (video, audio *Track) {
	tracks := ReadFMP4(t, H264AACFile(t, seconds))
	return tracks[0], tracks[1]
}

// H265 is H.265 with B-frames.
func H265(t testing.TB, seconds int) *Track {
	p := ffmpegSource(t, fmt.Sprintf("h265-%ds.mp4", seconds), "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
		"-t", strconv.Itoa(seconds), "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "keyint=30:bframes=2:log-level=error", "-pix_fmt", "yuv420p",
		"-tag:v", "hvc1", "-movflags", "frag_keyframe+empty_moov+default_base_moof+negative_cts_offsets", "-f", "mp4")
	return ReadFMP4(t, p)[0]
}

// ReadFMP4 parses a fragmented MP4 made by ffmpeg into tracks with decode and presentation times.
func ReadFMP4(t testing.TB, path string) []*Track {
	t.Helper()
	mediaMu.Lock()
	defer mediaMu.Unlock()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var init fmp4.Init
	if err := init.Unmarshal(bytes.NewReader(data)); err != nil {
		t.Fatalf("init: %v", err)
	}
	var parts fmp4.Parts
	if err := parts.Unmarshal(data); err != nil {
		t.Fatalf("parts: %v", err)
	}
	var out []*Track
	for _, it := range init.Tracks {
		tr := &Track{Init: it, Clock: it.TimeScale}
		switch c := it.Codec.(type) {
		case *mp4.CodecH264:
			tr.Codec = sfu.Codec{Name: sfu.CodecH264, ClockRate: 90000, PayloadType: 96}
		case *mp4.CodecH265:
			tr.Codec = sfu.Codec{Name: sfu.CodecH265, ClockRate: 90000, PayloadType: 96}
		case *mp4.CodecOpus:
			tr.Codec = sfu.Codec{Name: sfu.CodecOpus, ClockRate: 48000, Channels: 2, PayloadType: 111}
		case *mp4.CodecMPEG4Audio:
			asc, _ := c.Config.Marshal()
			tr.Codec = sfu.Codec{Name: sfu.CodecAAC, ClockRate: uint32(c.Config.SampleRate), Channels: uint16(c.Config.ChannelCount), PayloadType: 97,
				Fmtp: fmt.Sprintf("streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=%x", asc)}
		default:
			t.Fatalf("unexpected codec %T", c)
		}
		out = append(out, tr)
	}
	for _, part := range parts {
		for _, pt := range part.Tracks {
			for _, tr := range out {
				if tr.Init.ID != pt.ID {
					continue
				}
				dts := int64(pt.BaseTime)
				for _, s := range pt.Samples {
					tr.Samples = append(tr.Samples, Sample{PTS: dts + int64(s.PTSOffset), DTS: dts, Key: !s.IsNonSyncSample, Data: s.Payload})
					dts += int64(s.Duration)
				}
			}
		}
	}
	// ffmpeg's MP4 times are in the track timescale; RTP video runs at 90 kHz. Sync flags of
	// first samples are not always parsed: take them from the bitstream.
	for _, tr := range out {
		for i, s := range tr.Samples {
			var au h264.AVCC
			switch tr.Codec.Name {
			case sfu.CodecH264:
				_ = au.Unmarshal(s.Data)
				tr.Samples[i].Key = h264.IsRandomAccess(au)
			case sfu.CodecH265:
				_ = au.Unmarshal(s.Data)
				tr.Samples[i].Key = h265.IsRandomAccess(au)
			}
		}
		if tr.Codec.Kind() == sfu.KindVideo && tr.Clock != 90000 {
			for i := range tr.Samples {
				tr.Samples[i].PTS = tr.Samples[i].PTS * 90000 / int64(tr.Clock)
				tr.Samples[i].DTS = tr.Samples[i].DTS * 90000 / int64(tr.Clock)
			}
			tr.Clock = 90000
		}
	}
	return out
}

// VP8 is VP8 in IVF (1 s GOP), seconds long.
func VP8(t testing.TB, seconds int) *Track {
	p := ffmpegSource(t, fmt.Sprintf("vp8-%ds.ivf", seconds), "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-t", strconv.Itoa(seconds),
		"-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-g", "30", "-b:v", "500k", "-f", "ivf")
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) < 32 || string(data[:4]) != "DKIF" {
		t.Fatal("not an IVF file")
	}
	den := binary.LittleEndian.Uint32(data[16:])
	num := binary.LittleEndian.Uint32(data[20:])
	tr := &Track{Codec: sfu.Codec{Name: sfu.CodecVP8, ClockRate: 90000, PayloadType: 96}, Clock: 90000}
	for pos := 32; pos+12 <= len(data); {
		n := int(binary.LittleEndian.Uint32(data[pos:]))
		pts := int64(binary.LittleEndian.Uint64(data[pos+4:]))
		pos += 12
		if pos+n > len(data) {
			break
		}
		f := data[pos : pos+n]
		ts := pts * 90000 * int64(num) / int64(den)
		tr.Samples = append(tr.Samples, Sample{PTS: ts, DTS: ts, Key: f[0]&1 == 0, Data: f})
		pos += n
	}
	return tr
}

// Packetizer turns a track's samples into RTP packets.
type Packetizer struct {
	tr   *Track
	h264 *rtph264.Encoder
	h265 *rtph265.Encoder
	aac  *rtpmpeg4audio.Encoder
	vp8  *rtpvp8.Encoder
	seq  uint16
	base uint32
}

// NewPacketizer returns the packetizer of a track.
func NewPacketizer(t testing.TB, tr *Track) *Packetizer {
	p := &Packetizer{tr: tr, base: 1000}
	var err error
	switch tr.Codec.Name {
	case sfu.CodecH264:
		p.h264 = &rtph264.Encoder{PayloadType: 96, PacketizationMode: 1, PayloadMaxSize: 1200}
		err = p.h264.Init()
	case sfu.CodecH265:
		p.h265 = &rtph265.Encoder{PayloadType: 96, PayloadMaxSize: 1200}
		err = p.h265.Init()
	case sfu.CodecAAC:
		p.aac = &rtpmpeg4audio.Encoder{PayloadType: 97, SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3}
		err = p.aac.Init()
	case sfu.CodecVP8:
		p.vp8 = &rtpvp8.Encoder{PayloadType: 96, PayloadMaxSize: 1200}
		err = p.vp8.Init()
	}
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Packets returns the RTP packets of sample s, its RTP timestamp offset by off ticks.
func (p *Packetizer) Packets(s Sample, off int64) ([]*rtp.Packet, error) {
	var pkts []*rtp.Packet
	var err error
	switch {
	case p.h264 != nil:
		var au h264.AVCC
		if err := au.Unmarshal(s.Data); err != nil {
			return nil, err
		}
		if c, ok := p.tr.Init.Codec.(*mp4.CodecH264); ok && s.Key {
			au = append([][]byte{c.SPS, c.PPS}, au...) // parameter sets in-band, as the SFU carries them
		}
		pkts, err = p.h264.Encode(au)
	case p.h265 != nil:
		var au h264.AVCC
		if err := au.Unmarshal(s.Data); err != nil {
			return nil, err
		}
		if c, ok := p.tr.Init.Codec.(*mp4.CodecH265); ok && s.Key {
			au = append([][]byte{c.VPS, c.SPS, c.PPS}, au...)
		}
		pkts, err = p.h265.Encode(au)
	case p.aac != nil:
		pkts, err = p.aac.Encode([][]byte{s.Data})
	case p.vp8 != nil:
		pkts, err = p.vp8.Encode(s.Data)
	default:
		pkts = []*rtp.Packet{{Header: rtp.Header{Version: 2, PayloadType: 111, Marker: true}, Payload: s.Data}}
	}
	if err != nil {
		return nil, err
	}
	for _, pk := range pkts {
		pk.SequenceNumber = p.seq
		p.seq++
		pk.Timestamp = p.base + uint32(s.PTS+off)
		pk.SSRC = 1234
	}
	return pkts, nil
}

// Feed sends the tracks' packets in real time, in decode order, for d (looping the sources),
// through send. It returns when d has passed or stop is closed.
func Feed(t testing.TB, tracks []*Track, d time.Duration, stop <-chan struct{}, send func(track int, pk *rtp.Packet)) {
	type item struct {
		track int
		s     Sample
		at    int64 // ns from the start
		off   int64 // ticks added by looping
	}
	var items []item
	for ti, tr := range tracks {
		dur := tr.Samples[len(tr.Samples)-1].DTS - tr.Samples[0].DTS + (tr.Samples[1].DTS - tr.Samples[0].DTS)
		first := tr.Samples[0].DTS
		for loop := int64(0); ; loop++ {
			done := false
			for _, s := range tr.Samples {
				at := ticksToNs(s.DTS-first+loop*dur, tr.Clock)
				if at >= int64(d) {
					done = true
					break
				}
				items = append(items, item{ti, s, at, loop * dur})
			}
			if done {
				break
			}
		}
	}
	sort.SliceStable(items, func(i, j int) bool { return items[i].at < items[j].at })
	ps := make([]*Packetizer, len(tracks))
	for i, tr := range tracks {
		ps[i] = NewPacketizer(t, tr)
	}
	start := time.Now()
	for _, it := range items {
		if wait := time.Duration(it.at) - time.Since(start); wait > 0 {
			select {
			case <-time.After(wait):
			case <-stop:
				return
			}
		}
		pkts, err := ps[it.track].Packets(it.s, it.off)
		if err != nil {
			t.Errorf("packetizing: %v", err)
			return
		}
		for _, pk := range pkts {
			send(it.track, pk)
		}
	}
}

// Probe is what ffprobe says about a file.
type Probe struct {
	Streams []struct {
		CodecName string `json:"codec_name"`
		CodecType string `json:"codec_type"`
		StartTime string `json:"start_time"`
		Duration  string `json:"duration"`
		HasBFrame int    `json:"has_b_frames"`
	} `json:"streams"`
	Format struct {
		Duration  string `json:"duration"`
		StartTime string `json:"start_time"`
	} `json:"format"`
}

// FFprobe returns ffprobe's description of file (streams and format).
func FFprobe(t testing.TB, file string) Probe {
	t.Helper()
	fp := sfutest.RequireTool(t, "ffprobe")
	out, err := exec.Command(fp, "-v", "error", "-show_streams", "-show_format", "-of", "json", file).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", file, err)
	}
	var p Probe
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// VideoFrames counts the video frames ffprobe decodes from a file or URL (an HLS playlist).
func VideoFrames(t testing.TB, input string) int {
	t.Helper()
	fp := sfutest.RequireTool(t, "ffprobe")
	out, err := exec.Command(fp, "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", input).CombinedOutput() //nolint:gosec // test input
	if err != nil {
		t.Fatalf("ffprobe %s: %v: %s", input, err, out)
	}
	n, err := strconv.Atoi(strings.Fields(string(out) + " x")[0]) // HLS lists the stream once per program
	if err != nil {
		t.Fatalf("ffprobe %s: %q", input, out)
	}
	return n
}

// DecodeErrors decodes the whole file with ffmpeg and returns what it printed at level error.
func DecodeErrors(t testing.TB, file string) string {
	t.Helper()
	ff := sfutest.RequireTool(t, "ffmpeg")
	// Frames keep their own times (passthrough, in the file's time base): a browser's variable
	// frame rate put on the null muxer's guessed constant rate gives "non monotonically
	// increasing dts" for frames closer than one guessed frame, while frames that really share
	// a time still do.
	out, err := exec.Command(ff, "-v", "error", "-i", file, "-fps_mode", "passthrough", "-enc_time_base", "-1",
		"-f", "null", "-").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// Seconds parses one of ffprobe's decimal second values (0 when absent).
func Seconds(s string) float64 {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return math.NaN()
	}
	return v
}

// Verify checks a recording as the issue demands: the codecs, a duration within 5 % of
// want, audio and video starting within 100 ms of each other, and a clean decode.
func Verify(t testing.TB, file string, want time.Duration, codecs ...string) Probe {
	t.Helper()
	p := FFprobe(t, file)
	var got []string
	starts := map[string]float64{}
	for _, s := range p.Streams {
		got = append(got, s.CodecName)
		starts[s.CodecType] = Seconds(s.StartTime)
	}
	if strings.Join(got, ",") != strings.Join(codecs, ",") {
		t.Errorf("%s: codecs %v, want %v", filepath.Base(file), got, codecs)
	}
	if want > 0 {
		d := Seconds(p.Format.Duration)
		if math.Abs(d-want.Seconds()) > 0.05*want.Seconds() {
			t.Errorf("%s: duration %.3f s, want %.3f s ±5%%", filepath.Base(file), d, want.Seconds())
		}
	}
	if a, okA := starts["audio"]; okA {
		if v, okV := starts["video"]; okV && math.Abs(a-v) > 0.1 {
			t.Errorf("%s: audio starts at %.3f s, video at %.3f s: more than 100 ms apart", filepath.Base(file), a, v)
		}
	}
	if e := DecodeErrors(t, file); e != "" {
		t.Errorf("%s: ffmpeg decode errors:\n%s", filepath.Base(file), e)
	}
	return p
}

// FeedAll packetizes the sources once, without pacing, in decode order, with each packet's time
// from the start (for benchmarks).
func FeedAll(t testing.TB, srcs []*Track, fn func(track int, at time.Duration, pk *rtp.Packet)) {
	type item struct {
		track int
		s     Sample
		at    int64
	}
	var items []item
	for ti, tr := range srcs {
		for _, s := range tr.Samples {
			items = append(items, item{ti, s, ticksToNs(s.DTS-tr.Samples[0].DTS, tr.Clock)})
		}
	}
	sort.SliceStable(items, func(i, j int) bool { return items[i].at < items[j].at })
	ps := make([]*Packetizer, len(srcs))
	for i, tr := range srcs {
		ps[i] = NewPacketizer(t, tr)
	}
	for _, it := range items {
		pkts, err := ps[it.track].Packets(it.s, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, pk := range pkts {
			fn(it.track, time.Duration(it.at), pk)
		}
	}
}

// PCMU is G.711 µ-law at 8 kHz in 20 ms packets.
func PCMU(t testing.TB, seconds int) *Track {
	p := ffmpegSource(t, fmt.Sprintf("pcmu-%ds.ul", seconds), "-f", "lavfi", "-i", "sine=frequency=500:sample_rate=8000",
		"-t", strconv.Itoa(seconds), "-c:a", "pcm_mulaw", "-f", "mulaw")
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	tr := &Track{Codec: sfu.Codec{Name: sfu.CodecPCMU, ClockRate: 8000, Channels: 1, PayloadType: 0}, Clock: 8000}
	for i := 0; i+160 <= len(data); i += 160 {
		tr.Samples = append(tr.Samples, Sample{PTS: int64(i), DTS: int64(i), Key: true, Data: data[i : i+160]})
	}
	return tr
}
