package transcode

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/rtp"
	"github.com/pion/transport/v4/test"
	"github.com/pion/webrtc/v4/pkg/media/ivfreader"
	"github.com/pion/webrtc/v4/pkg/media/oggreader"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// startOpusSource publishes Opus made by ffmpeg from the tone pattern, 20 ms per packet.
func startOpusSource(t *testing.T, h *sfu.Hub, seconds int) *source {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tone.ogg")
	runFFmpeg(t, "-f", "lavfi", "-i",
		"aevalsrc=exprs='if(lt(mod(t\\,1)\\,0.1)\\,0.5*sin(2*PI*1000*t)\\,0)':s=48000:d="+strconv.Itoa(seconds),
		"-ac", "2", "-c:a", "libopus", "-b:a", "96k", "-frame_duration", "20", "-page_duration", "20000", "-f", "ogg", path)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, _, err := oggreader.NewWith(f)
	if err != nil {
		t.Fatal(err)
	}
	var frames []sourceFrame
	var ts uint32
	for {
		page, _, err := r.ParseNextPage()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if bytes.HasPrefix(page, []byte("OpusTags")) || len(page) == 0 {
			continue
		}
		frames = append(frames, sourceFrame{ts: ts, au: [][]byte{page}})
		ts += uint32(opusSamples(page))
	}
	codec := sfu.Codec{Name: sfu.CodecOpus, ClockRate: 48000, Channels: 2, PayloadType: 111}
	return startSource(t, h, "room", "browser", sfu.TrackSpec{Codec: codec, Name: "audio"}, frames, ts)
}

// Opus from a browser becomes AAC-LC that decodes, on the source's clock.
func TestOpusToAAC(t *testing.T) {
	t.Cleanup(test.CheckRoutines(t))
	h, _ := newHub(t)
	m := newManager(t, nil, nil)
	src := startOpusSource(t, h, 4)
	out, release, err := m.Transcode(src.track, sfu.CodecAAC)
	if err != nil {
		t.Fatal(err)
	}
	if c := out.Codec(); c.Name != sfu.CodecAAC || c.ClockRate != 48000 || c.Channels != 2 || !strings.Contains(c.Fmtp, "config=1190") {
		t.Fatalf("derived codec %+v", c)
	}
	got := &packetLog{}
	sub, err := out.Subscribe(got, sfu.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sfutest.WaitFor(t, "3.5 s of AAC", 20*time.Second, func() bool {
		pkts, _ := got.snapshot()
		return len(pkts) > 1 && pkts[len(pkts)-1].Header.Timestamp-pkts[0].Header.Timestamp >= 48000*7/2
	})
	sub.Close()
	release()

	dec := &rtpmpeg4audio.Decoder{SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3}
	if err := dec.Init(); err != nil {
		t.Fatal(err)
	}
	pkts, _ := got.snapshot()
	var adts mpeg4audio.ADTSPackets
	for i, p := range pkts {
		aus, err := dec.Decode(&rtp.Packet{Header: p.Header, Payload: p.Payload})
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		for j, au := range aus {
			if want := pkts[0].Header.Timestamp + uint32(len(adts)*1024); p.Header.Timestamp+uint32(j*1024) != want {
				t.Fatalf("access unit %d at %d, want %d: timestamps do not run on", len(adts), p.Header.Timestamp+uint32(j*1024), want)
			}
			adts = append(adts, &mpeg4audio.ADTSPacket{Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 48000, ChannelCount: 2, AU: au})
		}
	}
	b, err := adts.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "out.aac")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	probe := ffprobe(t, path)
	if probe.Streams[0].CodecName != "aac" || probe.Streams[0].Profile != "LC" || probe.Streams[0].SampleRate != "48000" {
		t.Fatalf("ffprobe: %+v", probe.Streams[0])
	}
	pcm := decodeMono(t, path)
	if len(pcm) < len(adts)*1024*95/100 {
		t.Fatalf("decoded %d samples from %d access units", len(pcm), len(adts))
	}
	srcPCM := decodeOpusSource(t, src)
	checkOnsets(t, src, onsets(srcPCM), out, pkts[0].Header.Timestamp, onsets(pcm))
}

// decodeOpusSource decodes one pass of an Opus source's packets.
func decodeOpusSource(t *testing.T, s *source) []int16 {
	t.Helper()
	var payloads [][]byte
	for _, f := range s.frames {
		payloads = append(payloads, f.au[0])
	}
	path := filepath.Join(t.TempDir(), "src.ogg")
	if err := writeOggOpus(path, payloads, 2); err != nil {
		t.Fatal(err)
	}
	return decodeMono(t, path)
}

// checkOnsets compares the tone onsets of a source (sample indices at 48 kHz from its first
// timestamp) and of its transcoded form (from first, the derived track's first timestamp)
// in wall-clock time, through the two tracks' sender reports.
func checkOnsets(t *testing.T, src *source, want []int, out *sfu.Track, first uint32, have []int) {
	t.Helper()
	if len(want) < 3 || len(have) < 3 {
		t.Fatalf("onsets: source %v, transcoded %v", want, have)
	}
	srcSR, _ := src.track.SenderReport()
	outSR, ok := out.SenderReport()
	if !ok {
		t.Fatal("the derived track has no sender report")
	}
	for i := range 3 {
		srcTS := src.base + uint32(int64(want[i])*int64(src.rate)/48000)
		outTS := first + uint32(int64(have[i])*int64(out.Codec().ClockRate)/48000)
		d := wallOf(outSR, outTS, out.Codec().ClockRate).Sub(wallOf(srcSR, srcTS, src.rate))
		t.Logf("onset %d: transcoded audio is %v from the source", i, d)
		if d < -100*time.Millisecond || d > 100*time.Millisecond {
			t.Errorf("onset %d is %v off the source (limit 100 ms)", i, d)
		}
	}
}

type probeResult struct {
	Streams []struct {
		CodecName  string `json:"codec_name"`
		Profile    string `json:"profile"`
		Width      int    `json:"width"`
		Height     int    `json:"height"`
		SampleRate string `json:"sample_rate"`
		Frames     string `json:"nb_read_frames"`
	} `json:"streams"`
}

// ffprobe describes a file's first stream, counting its decoded frames.
func ffprobe(t *testing.T, path string) probeResult {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(sfutest.RequireTool(t, "ffprobe"), "-v", "error", "-count_frames", "-show_streams", "-of", "json", path)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("ffprobe %s: %v\n%s", path, err, errb.String())
	}
	var r probeResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil || len(r.Streams) == 0 {
		t.Fatalf("ffprobe output %s: %v", out.String(), err)
	}
	return r
}

// videoFile makes 4 s of 320x240 30 fps test pattern in codec and returns its frames on a
// 90 kHz clock.
func videoFile(t *testing.T, codec string) []sourceFrame {
	t.Helper()
	dir := t.TempDir()
	lavfi := []string{"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=4"}
	switch codec {
	case sfu.CodecVP8, sfu.CodecVP9:
		enc := []string{"-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "500k", "-g", "60"}
		if codec == sfu.CodecVP9 {
			enc = []string{"-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "500k", "-g", "60"}
		}
		path := filepath.Join(dir, "src.ivf")
		runFFmpeg(t, append(append(lavfi, enc...), "-f", "ivf", path)...)
		return readIVF(t, path)
	case sfu.CodecH265:
		path := filepath.Join(dir, "src.hevc")
		runFFmpeg(t, append(lavfi, "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error:aud=1:keyint=60:bframes=0",
			"-f", "hevc", path)...)
		return readAnnexB(t, path, true)
	}
	t.Fatalf("no test file for %s", codec)
	return nil
}

func readIVF(t *testing.T, path string) []sourceFrame {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, hdr, err := ivfreader.NewWith(f)
	if err != nil {
		t.Fatal(err)
	}
	var frames []sourceFrame
	for {
		b, fh, err := r.ParseNextFrame()
		if errors.Is(err, io.EOF) {
			return frames
		}
		if err != nil {
			t.Fatal(err)
		}
		// pion reports pts*den/num; the presentation time is pts*num/den seconds.
		pts := fh.Timestamp * uint64(hdr.TimebaseNumerator) / uint64(hdr.TimebaseDenominator)
		ts := pts * 90000 * uint64(hdr.TimebaseNumerator) / uint64(hdr.TimebaseDenominator)
		frames = append(frames, sourceFrame{ts: uint32(ts), au: [][]byte{b}})
	}
}

// readAnnexB splits an H.264 or H.265 elementary stream made with access unit delimiters into
// access units at 30 fps.
func readAnnexB(t *testing.T, path string, h265 bool) []sourceFrame {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var nalus h264.AnnexB
	if err := nalus.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	var frames []sourceFrame
	for _, n := range nalus {
		aud := (!h265 && n[0]&0x1f == 9) || (h265 && (n[0]>>1)&0x3f == 35)
		if aud || len(frames) == 0 {
			frames = append(frames, sourceFrame{ts: uint32(len(frames) * 3000)})
		}
		if !aud {
			last := &frames[len(frames)-1]
			last.au = append(last.au, n)
		}
	}
	return frames
}

// VP8, VP9 and H.265 become H.264 Constrained Baseline that decodes, with the source's size,
// the source's timestamps, and a keyframe every 2 s.
func TestVideoToH264(t *testing.T) {
	t.Cleanup(test.CheckRoutines(t))
	for _, codec := range []string{sfu.CodecVP8, sfu.CodecVP9, sfu.CodecH265} {
		t.Run(codec, func(t *testing.T) {
			h, _ := newHub(t)
			m := newManager(t, nil, nil)
			frames := videoFile(t, codec)
			spec := sfu.TrackSpec{Codec: sfu.Codec{Name: codec, ClockRate: 90000, PayloadType: 96}, Name: "video", CacheGOP: true}
			src := startSource(t, h, "room", "cam", spec, frames, uint32(len(frames)*3000))
			out, release, err := m.Transcode(src.track, sfu.CodecH264)
			if err != nil {
				t.Fatal(err)
			}
			defer release()
			got := &packetLog{}
			sub, err := out.Subscribe(got, sfu.SubscribeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			sfutest.WaitFor(t, "5 s of H.264", 30*time.Second, func() bool {
				pkts, _ := got.snapshot()
				return len(pkts) > 1 && pkts[len(pkts)-1].Header.Timestamp-pkts[0].Header.Timestamp >= 5*90000
			})
			sub.Close()

			pkts, _ := got.snapshot()
			if !pkts[0].Keyframe {
				t.Fatal("the derived track does not start at a keyframe")
			}
			dec := &rtph264.Decoder{}
			if err := dec.Init(); err != nil {
				t.Fatal(err)
			}
			srcTS := map[uint32]bool{}
			src.mu.Lock()
			for _, w := range src.log {
				srcTS[w.ts] = true
			}
			src.mu.Unlock()
			var stream []byte
			var keyframes []uint32
			for _, p := range pkts {
				if p.Keyframe {
					keyframes = append(keyframes, p.Header.Timestamp)
				}
				au, err := dec.Decode(&rtp.Packet{Header: p.Header, Payload: p.Payload})
				if err != nil {
					continue // more packets needed
				}
				if !srcTS[p.Header.Timestamp] {
					t.Fatalf("an output frame at %d is not at a source frame's time", p.Header.Timestamp)
				}
				b, err := h264.AnnexB(au).Marshal()
				if err != nil {
					t.Fatal(err)
				}
				stream = append(stream, b...)
			}
			for i := 1; i < len(keyframes); i++ {
				if d := keyframes[i] - keyframes[i-1]; d < 2*90000-3000 || d > 2*90000+3000 {
					t.Errorf("keyframes %d ticks apart, want 2 s (180000)", d)
				}
			}
			if len(keyframes) < 2 {
				t.Errorf("%d keyframes in 5 s", len(keyframes))
			}
			path := filepath.Join(t.TempDir(), "out.h264")
			if err := os.WriteFile(path, stream, 0o600); err != nil {
				t.Fatal(err)
			}
			probe := ffprobe(t, path)
			s := probe.Streams[0]
			if s.CodecName != "h264" || s.Profile != "Constrained Baseline" || s.Width != 320 || s.Height != 240 {
				t.Fatalf("ffprobe: %+v", s)
			}
			if n, _ := strconv.Atoi(s.Frames); n < 140 {
				t.Fatalf("%s frames decoded from 5 s at 30 fps", s.Frames)
			}
			if w, h := out.Size(); w != 320 || h != 240 {
				t.Errorf("the derived track's size is %dx%d", w, h)
			}
		})
	}
}
