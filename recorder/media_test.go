package recorder

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
// with gortsplib's packetizers (an implementation independent of ours).

// mediaDir holds the generated sources.
var (
	mediaDir  string
	mediaOnce sync.Map // name → *sync.Once
	mediaMu   sync.Mutex
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sluice-recorder-media")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	mediaDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// ffmpegSource runs ffmpeg once for name with args (output path appended) and returns the path.
func ffmpegSource(t testing.TB, name string, args ...string) string {
	t.Helper()
	ff := sfutest.RequireTool(t, "ffmpeg")
	out := filepath.Join(mediaDir, name)
	o, _ := mediaOnce.LoadOrStore(name, &sync.Once{})
	var runErr error
	o.(*sync.Once).Do(func() {
		cmd := exec.Command(ff, append(append([]string{"-v", "error", "-y"}, args...), out)...)
		if b, err := cmd.CombinedOutput(); err != nil {
			runErr = fmt.Errorf("ffmpeg %s: %v\n%s", name, err, b)
			_ = os.Remove(out)
		}
	})
	if runErr != nil {
		t.Fatal(runErr)
	}
	if _, err := os.Stat(out); err != nil {
		t.Fatalf("source %s was not generated", name)
	}
	return out
}

// avSample is one access unit or audio frame with its times in the track's clock.
type avSample struct {
	pts, dts int64
	key      bool
	data     []byte // AVCC for H.264/H.265, raw otherwise
}

// avTrack is one track of a source file.
type avTrack struct {
	codec   sfu.Codec
	clock   uint32
	samples []avSample
	init    *fmp4.InitTrack
}

// h264OpusSource is H.264 with B-frames (1 s GOP) and Opus, seconds long.
func h264OpusSource(t testing.TB, seconds int, bframes int) (video, audio *avTrack) {
	name := fmt.Sprintf("h264-opus-%ds-bf%d.mp4", seconds, bframes)
	profile := "high"
	if bframes == 0 {
		profile = "baseline" // what WebRTC publishers send
	}
	p := ffmpegSource(t, name, "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", strconv.Itoa(seconds), "-c:v", "libx264", "-preset", "veryfast", "-profile:v", profile, "-g", "30", "-bf", strconv.Itoa(bframes), "-pix_fmt", "yuv420p",
		"-c:a", "libopus", "-b:a", "48k", "-movflags", "frag_keyframe+empty_moov+default_base_moof+negative_cts_offsets", "-f", "mp4")
	tracks := readFMP4(t, p)
	return tracks[0], tracks[1]
}

// h264AACSource is H.264 with B-frames and AAC-LC at 44.1 kHz.
func h264AACSource(t testing.TB, seconds int) (video, audio *avTrack) {
	p := ffmpegSource(t, fmt.Sprintf("h264-aac-%ds.mp4", seconds), "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=300:sample_rate=44100",
		"-t", strconv.Itoa(seconds), "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-bf", "3", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", "64k", "-movflags", "frag_keyframe+empty_moov+default_base_moof+negative_cts_offsets", "-f", "mp4")
	tracks := readFMP4(t, p)
	return tracks[0], tracks[1]
}

// h265Source is H.265 with B-frames.
func h265Source(t testing.TB, seconds int) *avTrack {
	p := ffmpegSource(t, fmt.Sprintf("h265-%ds.mp4", seconds), "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
		"-t", strconv.Itoa(seconds), "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "keyint=30:bframes=2:log-level=error", "-pix_fmt", "yuv420p",
		"-tag:v", "hvc1", "-movflags", "frag_keyframe+empty_moov+default_base_moof+negative_cts_offsets", "-f", "mp4")
	return readFMP4(t, p)[0]
}

// readFMP4 parses a fragmented MP4 made by ffmpeg into tracks with decode and presentation times.
func readFMP4(t testing.TB, path string) []*avTrack {
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
	var out []*avTrack
	for _, it := range init.Tracks {
		tr := &avTrack{init: it, clock: it.TimeScale}
		switch c := it.Codec.(type) {
		case *mp4.CodecH264:
			tr.codec = sfu.Codec{Name: sfu.CodecH264, ClockRate: 90000, PayloadType: 96}
		case *mp4.CodecH265:
			tr.codec = sfu.Codec{Name: sfu.CodecH265, ClockRate: 90000, PayloadType: 96}
		case *mp4.CodecOpus:
			tr.codec = sfu.Codec{Name: sfu.CodecOpus, ClockRate: 48000, Channels: 2, PayloadType: 111}
		case *mp4.CodecMPEG4Audio:
			asc, _ := c.Config.Marshal()
			tr.codec = sfu.Codec{Name: sfu.CodecAAC, ClockRate: uint32(c.Config.SampleRate), Channels: uint16(c.Config.ChannelCount), PayloadType: 97,
				Fmtp: fmt.Sprintf("streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=%x", asc)}
		default:
			t.Fatalf("unexpected codec %T", c)
		}
		out = append(out, tr)
	}
	for _, part := range parts {
		for _, pt := range part.Tracks {
			for _, tr := range out {
				if tr.init.ID != pt.ID {
					continue
				}
				dts := int64(pt.BaseTime)
				for _, s := range pt.Samples {
					tr.samples = append(tr.samples, avSample{pts: dts + int64(s.PTSOffset), dts: dts, key: !s.IsNonSyncSample, data: s.Payload})
					dts += int64(s.Duration)
				}
			}
		}
	}
	// ffmpeg's MP4 times are in the track timescale; RTP video runs at 90 kHz. Sync flags of
	// first samples are not always parsed: take them from the bitstream.
	for _, tr := range out {
		for i, s := range tr.samples {
			var au h264.AVCC
			switch tr.codec.Name {
			case sfu.CodecH264:
				_ = au.Unmarshal(s.data)
				tr.samples[i].key = h264.IsRandomAccess(au)
			case sfu.CodecH265:
				_ = au.Unmarshal(s.data)
				tr.samples[i].key = h265.IsRandomAccess(au)
			}
		}
		if tr.codec.Kind() == sfu.KindVideo && tr.clock != 90000 {
			for i := range tr.samples {
				tr.samples[i].pts = tr.samples[i].pts * 90000 / int64(tr.clock)
				tr.samples[i].dts = tr.samples[i].dts * 90000 / int64(tr.clock)
			}
			tr.clock = 90000
		}
	}
	return out
}

// vp8Source is VP8 in IVF (1 s GOP), seconds long.
func vp8Source(t testing.TB, seconds int) *avTrack {
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
	tr := &avTrack{codec: sfu.Codec{Name: sfu.CodecVP8, ClockRate: 90000, PayloadType: 96}, clock: 90000}
	for pos := 32; pos+12 <= len(data); {
		n := int(binary.LittleEndian.Uint32(data[pos:]))
		pts := int64(binary.LittleEndian.Uint64(data[pos+4:]))
		pos += 12
		if pos+n > len(data) {
			break
		}
		f := data[pos : pos+n]
		ts := pts * 90000 * int64(num) / int64(den)
		tr.samples = append(tr.samples, avSample{pts: ts, dts: ts, key: f[0]&1 == 0, data: f})
		pos += n
	}
	return tr
}

// packetizer turns a track's samples into RTP packets.
type packetizer struct {
	tr   *avTrack
	h264 *rtph264.Encoder
	h265 *rtph265.Encoder
	aac  *rtpmpeg4audio.Encoder
	vp8  *rtpvp8.Encoder
	seq  uint16
	base uint32
}

func newPacketizer(t testing.TB, tr *avTrack) *packetizer {
	p := &packetizer{tr: tr, base: 1000}
	var err error
	switch tr.codec.Name {
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

// packets returns the RTP packets of sample s, its RTP timestamp offset by off ticks.
func (p *packetizer) packets(s avSample, off int64) ([]*rtp.Packet, error) {
	var pkts []*rtp.Packet
	var err error
	switch {
	case p.h264 != nil:
		var au h264.AVCC
		if err := au.Unmarshal(s.data); err != nil {
			return nil, err
		}
		if c, ok := p.tr.init.Codec.(*mp4.CodecH264); ok && s.key {
			au = append([][]byte{c.SPS, c.PPS}, au...) // parameter sets in-band, as the SFU carries them
		}
		pkts, err = p.h264.Encode(au)
	case p.h265 != nil:
		var au h264.AVCC
		if err := au.Unmarshal(s.data); err != nil {
			return nil, err
		}
		if c, ok := p.tr.init.Codec.(*mp4.CodecH265); ok && s.key {
			au = append([][]byte{c.VPS, c.SPS, c.PPS}, au...)
		}
		pkts, err = p.h265.Encode(au)
	case p.aac != nil:
		pkts, err = p.aac.Encode([][]byte{s.data})
	case p.vp8 != nil:
		pkts, err = p.vp8.Encode(s.data)
	default:
		pkts = []*rtp.Packet{{Header: rtp.Header{Version: 2, PayloadType: 111, Marker: true}, Payload: s.data}}
	}
	if err != nil {
		return nil, err
	}
	for _, pk := range pkts {
		pk.SequenceNumber = p.seq
		p.seq++
		pk.Timestamp = p.base + uint32(s.pts+off)
		pk.SSRC = 1234
	}
	return pkts, nil
}

// feed sends the tracks' packets in real time, in decode order, for d (looping the sources),
// through send. It returns when d has passed or stop is closed.
func feed(t testing.TB, tracks []*avTrack, d time.Duration, stop <-chan struct{}, send func(track int, pk *rtp.Packet)) {
	type item struct {
		track int
		s     avSample
		at    int64 // ns from the start
		off   int64 // ticks added by looping
	}
	var items []item
	for ti, tr := range tracks {
		dur := tr.samples[len(tr.samples)-1].dts - tr.samples[0].dts + (tr.samples[1].dts - tr.samples[0].dts)
		first := tr.samples[0].dts
		for loop := int64(0); ; loop++ {
			done := false
			for _, s := range tr.samples {
				at := ticksToNs(s.dts-first+loop*dur, tr.clock)
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
	ps := make([]*packetizer, len(tracks))
	for i, tr := range tracks {
		ps[i] = newPacketizer(t, tr)
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
		pkts, err := ps[it.track].packets(it.s, it.off)
		if err != nil {
			t.Errorf("packetizing: %v", err)
			return
		}
		for _, pk := range pkts {
			send(it.track, pk)
		}
	}
}

// probe is what ffprobe says about a file.
type probe struct {
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

func ffprobe(t testing.TB, file string) probe {
	t.Helper()
	fp := sfutest.RequireTool(t, "ffprobe")
	out, err := exec.Command(fp, "-v", "error", "-show_streams", "-show_format", "-of", "json", file).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", file, err)
	}
	var p probe
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// decodeErrors decodes the whole file with ffmpeg and returns what it printed at level error.
func decodeErrors(t testing.TB, file string) string {
	t.Helper()
	ff := sfutest.RequireTool(t, "ffmpeg")
	out, err := exec.Command(ff, "-v", "error", "-i", file, "-f", "null", "-").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

func seconds(s string) float64 {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return math.NaN()
	}
	return v
}

// verifyFile checks a recording as the issue demands: the codecs, a duration within 5 % of
// want, audio and video starting within 100 ms of each other, and a clean decode.
func verifyFile(t testing.TB, file string, want time.Duration, codecs ...string) probe {
	t.Helper()
	p := ffprobe(t, file)
	var got []string
	starts := map[string]float64{}
	for _, s := range p.Streams {
		got = append(got, s.CodecName)
		starts[s.CodecType] = seconds(s.StartTime)
	}
	if strings.Join(got, ",") != strings.Join(codecs, ",") {
		t.Errorf("%s: codecs %v, want %v", filepath.Base(file), got, codecs)
	}
	if want > 0 {
		d := seconds(p.Format.Duration)
		if math.Abs(d-want.Seconds()) > 0.05*want.Seconds() {
			t.Errorf("%s: duration %.3f s, want %.3f s ±5%%", filepath.Base(file), d, want.Seconds())
		}
	}
	if a, okA := starts["audio"]; okA {
		if v, okV := starts["video"]; okV && math.Abs(a-v) > 0.1 {
			t.Errorf("%s: audio starts at %.3f s, video at %.3f s: more than 100 ms apart", filepath.Base(file), a, v)
		}
	}
	if e := decodeErrors(t, file); e != "" {
		t.Errorf("%s: ffmpeg decode errors:\n%s", filepath.Base(file), e)
	}
	return p
}
