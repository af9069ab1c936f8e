package media

import (
	"bytes"
	"encoding/binary"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/pion/rtp"

	"github.com/sluice-media/sluice/sfu"
)

type sink struct {
	mu   sync.Mutex
	pkts []*sfu.Packet
}

func (s *sink) WritePacket(p *sfu.Packet, _ bool) error {
	s.mu.Lock()
	s.pkts = append(s.pkts, p)
	s.mu.Unlock()
	return nil
}

func (s *sink) all() []*sfu.Packet {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.pkts)
}

func newTrack(t *testing.T, c sfu.Codec) (*sfu.Track, *sink) {
	t.Helper()
	h, err := sfu.NewHub(sfu.Options{Config: sfu.DefaultConfig()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	p, err := h.Join("r", sfu.ParticipantSpec{Identity: "p"})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := p.Publish(sfu.TrackSpec{Codec: c, CacheGOP: true})
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{}
	sub, err := tr.Subscribe(s, sfu.SubscribeOptions{QueueSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	return tr, s
}

func waitPackets(t *testing.T, s *sink, n int) []*sfu.Packet {
	t.Helper()
	for range 500 {
		if p := s.all(); len(p) >= n {
			return p
		}
		waitTick()
	}
	t.Fatalf("got %d packets, want %d", len(s.all()), n)
	return nil
}

// waitFrames waits until the sink has n whole frames (n packets with the marker bit).
func waitFrames(t *testing.T, s *sink, n int) []*sfu.Packet {
	t.Helper()
	for range 500 {
		p := s.all()
		ends := 0
		for _, pk := range p {
			if pk.Header.Marker {
				ends++
			}
		}
		if ends >= n {
			return p
		}
		waitTick()
	}
	t.Fatalf("got %d packets without %d frame ends", len(s.all()), n)
	return nil
}

var (
	sps = []byte{0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10}
	pps = []byte{0x68, 0xeb, 0xe3, 0xcb}
)

func TestH264ParamsBeforeEveryKeyframe(t *testing.T) {
	track, s := newTrack(t, H264Codec(sps, pps, 96))
	w, err := NewWriter(track)
	if err != nil {
		t.Fatal(err)
	}
	idr := append([]byte{0x65}, bytes.Repeat([]byte{0xaa}, 3000)...) // needs FU-A
	slice := append([]byte{0x41}, bytes.Repeat([]byte{0xbb}, 500)...)
	aud := []byte{0x09, 0xf0}
	// The first keyframe uses the SDP's parameter sets; the second has new ones in-band.
	sps2 := append(slices.Clone(sps), 0x42)
	frames := []struct {
		pts uint32
		au  [][]byte
	}{
		{0, [][]byte{aud, idr}},
		{3000, [][]byte{aud, slice}},
		{6000, [][]byte{sps2, pps}}, // parameter sets alone: kept, nothing written
		{9000, [][]byte{idr}},
		{12000, [][]byte{slice}},
	}
	for _, f := range frames {
		if err := w.Write(f.pts, f.au); err != nil {
			t.Fatal(err)
		}
	}
	// Wait for the last access unit's final packet.
	var pkts []*sfu.Packet
	for range 500 {
		pkts = s.all()
		if n := len(pkts); n > 0 && pkts[n-1].Header.Timestamp == 12000 && pkts[n-1].Header.Marker {
			break
		}
		waitTick()
	}
	// Depacketize everything back into access units.
	var dec rtph264.Decoder
	if err := dec.Init(); err != nil {
		t.Fatal(err)
	}
	type au struct {
		pts   uint32
		nalus [][]byte
		key   bool
	}
	var aus []au
	key := false
	for _, p := range pkts {
		if len(p.Payload) > MaxPayload {
			t.Fatalf("payload of %d bytes exceeds %d", len(p.Payload), MaxPayload)
		}
		key = key || p.Keyframe
		rp := &rtp.Packet{Header: p.Header, Payload: p.Payload}
		nalus, err := dec.Decode(rp)
		if err != nil {
			continue // more fragments needed
		}
		aus = append(aus, au{p.Header.Timestamp, nalus, key})
		key = false
	}
	if len(aus) != 4 {
		t.Fatalf("decoded %d access units, want 4", len(aus))
	}
	want := []au{
		{0, [][]byte{sps, pps, idr}, true},
		{3000, [][]byte{slice}, false},
		{9000, [][]byte{sps2, pps, idr}, true},
		{12000, [][]byte{slice}, false},
	}
	for i, w := range want {
		g := aus[i]
		if g.pts != w.pts || g.key != w.key || len(g.nalus) != len(w.nalus) {
			t.Fatalf("access unit %d: pts %d key %v %d nalus; want pts %d key %v %d nalus", i, g.pts, g.key, len(g.nalus), w.pts, w.key, len(w.nalus))
		}
		for j := range w.nalus {
			if !bytes.Equal(g.nalus[j], w.nalus[j]) {
				t.Fatalf("access unit %d nalu %d differs", i, j)
			}
		}
	}
	for i, p := range pkts {
		if p.Keyframe && !sfu.IsKeyframe(sfu.CodecH264, p.Payload) {
			t.Fatalf("packet %d flagged keyframe but does not start one", i)
		}
	}
}

func TestAACRoundTrip(t *testing.T) {
	config := []byte{0x11, 0x90} // AAC-LC 48 kHz stereo
	c := AACCodec(config, 48000, 2, 97)
	if got, err := ParseAAC(c); err != nil || !bytes.Equal(got.Raw, config) {
		t.Fatalf("ParseAAC = %+v %v", got, err)
	}
	track, s := newTrack(t, c)
	w, err := NewWriter(track)
	if err != nil {
		t.Fatal(err)
	}
	frames := [][]byte{bytes.Repeat([]byte{1}, 300), bytes.Repeat([]byte{2}, 2000)}
	for i, f := range frames {
		if err := w.Write(uint32(i*1024), [][]byte{f}); err != nil {
			t.Fatal(err)
		}
	}
	pkts := waitPackets(t, s, 3)
	dec := rtpmpeg4audio.Decoder{SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3}
	if err := dec.Init(); err != nil {
		t.Fatal(err)
	}
	var got [][]byte
	for _, p := range pkts {
		aus, err := dec.Decode(&rtp.Packet{Header: p.Header, Payload: p.Payload})
		if err == nil {
			got = append(got, aus...)
		}
	}
	if len(got) != 2 || !bytes.Equal(got[0], frames[0]) || !bytes.Equal(got[1], frames[1]) {
		t.Fatalf("round trip lost frames: %d", len(got))
	}
}

// ivfFrames reads the frames of an IVF file (the container ffmpeg writes VP8/VP9 into).
func ivfFrames(t *testing.T, path string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for i := 32; i+12 <= len(data); {
		n := int(binary.LittleEndian.Uint32(data[i:]))
		i += 12
		out = append(out, data[i:i+n])
		i += n
	}
	return out
}

// Real libvpx frames (testdata/*.ivf from ffmpeg): the first is a keyframe, the next are not.
func TestKeyframeDetectionOfFrames(t *testing.T) {
	for _, tc := range []struct {
		file  string
		codec sfu.Codec
	}{
		{"testdata/vp8.ivf", sfu.Codec{Name: sfu.CodecVP8, ClockRate: 90000, PayloadType: 96}},
		{"testdata/vp9.ivf", sfu.Codec{Name: sfu.CodecVP9, ClockRate: 90000, PayloadType: 98}},
	} {
		t.Run(tc.codec.Name, func(t *testing.T) {
			frames := ivfFrames(t, tc.file)
			if len(frames) != 3 {
				t.Fatalf("%d frames in %s", len(frames), tc.file)
			}
			track, s := newTrack(t, tc.codec)
			w, err := NewWriter(track)
			if err != nil {
				t.Fatal(err)
			}
			for i, f := range frames {
				if err := w.Write(uint32(i*18000), [][]byte{f}); err != nil {
					t.Fatal(err)
				}
			}
			pkts := waitFrames(t, s, 3)
			var keys []bool
			last := uint32(1)
			for _, p := range pkts {
				if p.Header.Timestamp != last {
					keys = append(keys, p.Keyframe)
					last = p.Header.Timestamp
				} else if p.Keyframe {
					t.Fatal("a keyframe flag on a packet that does not start the frame")
				}
			}
			if !slices.Equal(keys, []bool{true, false, false}) {
				t.Fatalf("keyframe flags per frame %v", keys)
			}
		})
	}
	if !av1HasSequenceHeader([][]byte{{0x0a, 0x0b}}) || av1HasSequenceHeader([][]byte{{0x32, 0x00}}) {
		t.Fatal("av1 sequence header detection")
	}
}

func TestH264Codec(t *testing.T) {
	c := H264Codec(sps, pps, 96)
	if c.Fmtp != "packetization-mode=1;profile-level-id=64001f;sprop-parameter-sets=Z2QAH6zZQFAFuwEQ,aOvjyw==" {
		t.Fatalf("fmtp %q", c.Fmtp)
	}
	if got := SpropSets(c.Fmtp, "sprop-parameter-sets"); len(got) != 2 || !bytes.Equal(got[0], sps) || !bytes.Equal(got[1], pps) {
		t.Fatalf("params %x", got)
	}
}

func FuzzWriterH264(f *testing.F) {
	f.Add([]byte{0x65, 1, 2, 3}, []byte{0x67, 0x42})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		h, _ := sfu.NewHub(sfu.Options{Config: sfu.DefaultConfig()})
		defer h.Close()
		p, _ := h.Join("r", sfu.ParticipantSpec{Identity: "p"})
		tr, _ := p.Publish(sfu.TrackSpec{Codec: H264Codec(sps, pps, 96)})
		w, err := NewWriter(tr)
		if err != nil {
			t.Fatal(err)
		}
		_ = w.Write(0, [][]byte{a, b}) // must not panic
	})
}
