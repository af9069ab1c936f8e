package transcode

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/sluice-media/sluice/egress"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// ffmpegPath returns ffmpeg, skipping the test without it (failing under CI=true).
func ffmpegPath(t testing.TB) string {
	t.Helper()
	return sfutest.RequireTool(t, "ffmpeg")
}

// runFFmpeg runs ffmpeg with args and returns its stdout.
func runFFmpeg(t testing.TB, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, ffmpegPath(t), append([]string{"-hide_banner", "-nostdin", "-v", "error"}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("ffmpeg %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.Bytes()
}

// toneADTS makes an AAC (ADTS) file of seconds s at rate Hz: a 1 kHz tone for the first 100 ms
// of every second, silence otherwise, so that onsets can be found after decoding.
func toneADTS(t testing.TB, rate, seconds int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tone.aac")
	runFFmpeg(t, "-f", "lavfi", "-i",
		fmt.Sprintf("aevalsrc=exprs='if(lt(mod(t\\,1)\\,0.1)\\,0.5*sin(2*PI*1000*t)\\,0)':s=%d:d=%d", rate, seconds),
		"-ac", "2", "-c:a", "aac", "-b:a", "128k", "-f", "adts", path)
	return path
}

// adtsFile is an AAC stream: its config and access units of 1024 samples.
type adtsFile struct {
	config mpeg4audio.AudioSpecificConfig
	aus    [][]byte
}

func readADTS(t testing.TB, path string) adtsFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var pkts mpeg4audio.ADTSPackets
	if err := pkts.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	f := adtsFile{config: mpeg4audio.AudioSpecificConfig{Type: pkts[0].Type, SampleRate: pkts[0].SampleRate, ChannelCount: pkts[0].ChannelCount}}
	for _, p := range pkts {
		f.aus = append(f.aus, p.AU)
	}
	return f
}

// newHub returns a running hub and its events.
func newHub(t testing.TB) (*sfu.Hub, *sfu.LocalEmitter) {
	t.Helper()
	h, em := sfutest.NewHub(t, nil)
	sfutest.RunHub(t, h)
	return h, em
}

// newManager returns a transcoder with ffmpeg from PATH (or cfg), closed when the test ends.
func newManager(t testing.TB, log *slog.Logger, adjust func(*Options)) *Manager {
	t.Helper()
	opts := Options{Config: egress.DefaultTranscodeConfig(), Logger: log}
	if adjust != nil {
		adjust(&opts)
	}
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// written is one frame a source wrote: its RTP timestamp and when.
type written struct {
	ts uint32
	at time.Time
}

// source publishes a track from frames at the real-time pace, as an ingest would: its clock
// starts at a large timestamp (it wraps soon) and a sender report maps it to wall-clock time.
// The frames loop with continuous timestamps.
type source struct {
	p     *sfu.Participant
	track *sfu.Track
	rate  uint32
	base  uint32
	start time.Time

	frames []sourceFrame
	loop   uint32 // ticks of one pass over frames

	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	log  []written
}

// sourceFrame is one frame of a source, at ts ticks from its start.
type sourceFrame struct {
	ts uint32
	au [][]byte
}

func startSource(t testing.TB, h *sfu.Hub, room, identity string, spec sfu.TrackSpec, frames []sourceFrame, loop uint32) *source {
	t.Helper()
	p, err := h.Join(room, sfu.ParticipantSpec{Identity: identity, Kind: sfu.ParticipantRTMP})
	if err != nil {
		t.Fatal(err)
	}
	track, err := p.Publish(spec)
	if err != nil {
		t.Fatal(err)
	}
	s := &source{p: p, track: track, rate: spec.Codec.ClockRate, base: 4_294_000_000, start: time.Now(),
		frames: frames, loop: loop, stop: make(chan struct{}), done: make(chan struct{})}
	track.SetSenderReport(sfu.SenderReport{RTPTime: s.base, NTPTime: s.start})
	w, err := media.NewWriter(track)
	if err != nil {
		t.Fatal(err)
	}
	go s.run(w)
	t.Cleanup(s.close)
	return s
}

func (s *source) run(w *media.Writer) {
	defer close(s.done)
	for i := 0; ; i++ {
		f := s.frames[i%len(s.frames)]
		rel := uint32(i/len(s.frames))*s.loop + f.ts
		due := s.start.Add(time.Duration(rel) * time.Second / time.Duration(s.rate))
		timer := time.NewTimer(time.Until(due))
		select {
		case <-s.stop:
			timer.Stop()
			return
		case <-timer.C:
		}
		ts := s.base + rel
		if err := w.Write(ts, f.au); err != nil {
			panic(err)
		}
		s.mu.Lock()
		s.log = append(s.log, written{ts, time.Now()})
		s.mu.Unlock()
	}
}

// writtenAt returns when the frame holding source timestamp ts (the last one at or before it)
// was written.
func (s *source) writtenAt(ts uint32) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.log) - 1; i >= 0; i-- {
		if int32(ts-s.log[i].ts) >= 0 {
			return s.log[i].at, true
		}
	}
	return time.Time{}, false
}

func (s *source) close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	s.p.Close(sfu.ReasonClientDisconnected, nil)
}

// startAACSource publishes an ADTS file's AAC.
func startAACSource(t testing.TB, h *sfu.Hub, room, identity, adts string) *source {
	t.Helper()
	f := readADTS(t, adts)
	cfg, err := f.config.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	frames := make([]sourceFrame, len(f.aus))
	for i, au := range f.aus {
		frames[i] = sourceFrame{ts: uint32(i * 1024), au: [][]byte{au}}
	}
	codec := media.AACCodec(cfg, f.config.SampleRate, f.config.ChannelCount, 97)
	return startSource(t, h, room, identity, sfu.TrackSpec{Codec: codec, Name: "audio"}, frames, uint32(len(f.aus)*1024))
}

// packetLog records what a subscription delivers, with arrival times.
type packetLog struct {
	mu   sync.Mutex
	pkts []*sfu.Packet
	at   []time.Time
}

func (l *packetLog) WritePacket(p *sfu.Packet, _ bool) error {
	l.mu.Lock()
	l.pkts = append(l.pkts, p)
	l.at = append(l.at, time.Now())
	l.mu.Unlock()
	return nil
}

func (l *packetLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.pkts)
}

func (l *packetLog) snapshot() ([]*sfu.Packet, []time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.pkts), slices.Clone(l.at)
}

// writeOggOpus writes Opus packets as an Ogg Opus file (RFC 7845, RFC 3533): one page per
// packet, granule positions counting 48 kHz samples, pre-skip 0 so that decoded sample i is
// the i-th sample after the first packet's timestamp.
func writeOggOpus(path string, packets [][]byte, channels int) error {
	var buf bytes.Buffer
	seq := uint32(0)
	page := func(flags byte, granule uint64, data []byte) {
		var h [27]byte
		copy(h[:], "OggS")
		h[5] = flags
		binary.LittleEndian.PutUint64(h[6:], granule)
		binary.LittleEndian.PutUint32(h[14:], 0x5175)
		binary.LittleEndian.PutUint32(h[18:], seq)
		seq++
		var lacing []byte
		n := len(data)
		for n >= 255 {
			lacing = append(lacing, 255)
			n -= 255
		}
		lacing = append(lacing, byte(n))
		h[26] = byte(len(lacing))
		p := append(append(h[:], lacing...), data...)
		binary.LittleEndian.PutUint32(p[22:], oggCRC(p))
		buf.Write(p)
	}
	head := []byte("OpusHead")
	head = append(head, 1, byte(channels), 0, 0) // version, channels, pre-skip 0
	head = binary.LittleEndian.AppendUint32(head, 48000)
	head = append(head, 0, 0, 0) // gain, mapping family 0
	page(0x02, 0, head)
	tags := append([]byte("OpusTags"), 4, 0, 0, 0)
	tags = append(tags, "test"...)
	tags = append(tags, 0, 0, 0, 0)
	page(0, 0, tags)
	var granule uint64
	for i, p := range packets {
		granule += uint64(opusSamples(p))
		flags := byte(0)
		if i == len(packets)-1 {
			flags = 0x04
		}
		page(flags, granule, p)
	}
	return os.WriteFile(path, buf.Bytes(), 0o600)
}

// opusSamples is the duration of an Opus packet in 48 kHz samples (RFC 6716 §3.1).
func opusSamples(p []byte) int {
	if len(p) == 0 {
		return 0
	}
	sizes := []int{480, 960, 1920, 2880, 480, 960, 1920, 2880, 480, 960, 1920, 2880,
		480, 960, 480, 960, 120, 240, 480, 960, 120, 240, 480, 960, 120, 240, 480, 960, 120, 240, 480, 960}
	frames := 1
	switch p[0] & 3 {
	case 1, 2:
		frames = 2
	case 3:
		if len(p) > 1 {
			frames = int(p[1] & 0x3f)
		}
	}
	return sizes[p[0]>>3] * frames
}

var oggTable = func() *crc32.Table {
	// Ogg's CRC-32: polynomial 0x04c11db7, most significant bit first, no reflection.
	var t crc32.Table
	for i := range t {
		r := uint32(i) << 24
		for range 8 {
			if r&0x80000000 != 0 {
				r = r<<1 ^ 0x04c11db7
			} else {
				r <<= 1
			}
		}
		t[i] = r
	}
	return &t
}()

func oggCRC(p []byte) uint32 {
	var c uint32
	for _, b := range p {
		c = c<<8 ^ oggTable[byte(c>>24)^b]
	}
	return c
}

// decodeMono decodes a media file with ffmpeg into 48 kHz mono samples.
func decodeMono(t testing.TB, path string) []int16 {
	t.Helper()
	raw := runFFmpeg(t, "-i", path, "-f", "s16le", "-ac", "1", "-ar", "48000", "-")
	pcm := make([]int16, len(raw)/2)
	if err := binary.Read(bytes.NewReader(raw), binary.LittleEndian, pcm); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return pcm
}

// onsets returns the sample indices where a tone starts after at least 0.5 s of silence.
func onsets(pcm []int16) []int {
	var out []int
	quiet := 0
	for i, v := range pcm {
		if math.Abs(float64(v)) > 3000 {
			if quiet >= 24000 {
				out = append(out, i)
			}
			quiet = 0
		} else {
			quiet++
		}
	}
	return out
}

// ffmpegChildren returns the pids of this process's ffmpeg children.
func ffmpegChildren(t testing.TB) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readProcStat(pid)
		if err == nil && st.ppid == os.Getpid() && st.comm == "ffmpeg" {
			out = append(out, pid)
		}
	}
	return out
}

func newTestLogger(b *sfutest.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
