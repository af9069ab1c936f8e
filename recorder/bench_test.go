package recorder

import (
	"log/slog"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/sluice-media/sluice/recorder/rectest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
)

// countFS creates files that count and discard what is written.
type countFS struct{ written *int64 }

func (c countFS) Create(string) (File, error) { return &countFile{n: c.written}, nil }

type countFile struct{ n *int64 }

func (f *countFile) Write(p []byte) (int, error)            { *f.n += int64(len(p)); return len(p), nil }
func (f *countFile) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }
func (f *countFile) Truncate(int64) error                   { return nil }
func (f *countFile) Sync() error                            { return nil }
func (f *countFile) Close() error                           { return nil }

// BenchmarkRecorder measures the recording path from RTP packets to fMP4 bytes: depacketizing
// (H.264 with B-frames and Opus from ffmpeg), timing, muxing into fragments and writing them.
// One op is one packet; the file system discards the bytes.
func BenchmarkRecorder(b *testing.B) {
	video, audio := rectest.H264Opus(b, 10, 2)
	type timed struct {
		pk    *sfu.Packet
		ts    uint32
		track int
		at    int64
	}
	var pkts []timed
	var payload int64
	srcs := []*rectest.Track{video, audio}
	rectest.FeedAll(b, srcs, func(i int, at time.Duration, pk *rtp.Packet) {
		pkts = append(pkts, timed{&sfu.Packet{Header: pk.Header, Payload: pk.Payload}, pk.Timestamp, i, int64(at)})
		payload += int64(len(pk.Payload))
	})
	hub, _ := sfu.NewHub(sfu.Options{Config: sfu.DefaultConfig()})
	p, err := hub.Join("bench", sfu.ParticipantSpec{Identity: "cam", Kind: sfu.ParticipantRTMP})
	if err != nil {
		b.Fatal(err)
	}
	var written int64
	notes := make(chan captureNote, 16)
	go func() {
		for range notes {
		}
	}()
	defer close(notes)
	now := time.Unix(1_700_000_000, 0)
	c := newCapture(p, captureConfig{root: "/nonexistent", dir: "bench/RC_x", format: "mp4", fragment: 2 * time.Second, segment: 24 * time.Hour,
		fs: countFS{&written}, clock: func() time.Time { return now }, log: slog.New(slog.DiscardHandler), notes: notes, openAfter: 3 * time.Second})
	for _, s := range srcs {
		tr, err := p.Publish(sfu.TrackSpec{Codec: s.Codec})
		if err != nil {
			b.Fatal(err)
		}
		ts := &trackState{track: tr, codec: s.Codec, kind: tr.Kind(), clock: s.Codec.ClockRate}
		ts.dep, _ = media.NewReader(s.Codec)
		ts.cfg, _ = ts.dep.Params()
		ts.onFr = func(f *media.Frame) { c.frame(ts, f) }
		c.tr = append(c.tr, ts)
	}
	c.waitSince = now
	span := pkts[len(pkts)-1].at + int64(33*time.Millisecond)
	base := now.UnixNano()
	var seq [2]uint16
	b.ReportAllocs()
	b.SetBytes(payload / int64(len(pkts)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		loop := int64(i / len(pkts))
		t := pkts[i%len(pkts)]
		pk := t.pk
		pk.Header.Timestamp = t.ts + uint32(loop*span*int64(c.tr[t.track].clock)/int64(time.Second)) // the loop continues the clock
		pk.Header.SequenceNumber = seq[t.track]
		seq[t.track]++
		at := base + loop*span + t.at
		now = time.Unix(0, at)
		c.packet(inPacket{p: pk, track: t.track, at: at})
	}
	b.StopTimer()
	if b.N > len(pkts) && (c.state != stateOpen || c.seg == nil || len(c.seg.tracks) != 2) {
		b.Fatalf("no file with both tracks open (state %d)", c.state)
	}
	c.closeFile()
	if b.N > len(pkts) && written == 0 {
		b.Fatal("nothing written")
	}
	b.ReportMetric(float64(written)/float64(b.N), "fmp4-bytes/op")
}
