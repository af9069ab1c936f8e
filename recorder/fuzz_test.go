package recorder

import (
	"bytes"
	"testing"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
)

// seedFiles returns a small fMP4 and a small Matroska file made by our writers.
func seedFiles() (mp4File, mkvFile []byte) {
	tracks := []*fileTrack{
		{id: 1, codec: sfu.CodecOpus, kind: sfu.KindAudio, clock: 48000, cfg: media.Params{Channels: 2, SampleRate: 48000}},
	}
	for i := range 5 {
		tracks[0].samples = append(tracks[0].samples, sample{dts: int64(i * 960), dur: 960, key: true, n: 3})
		tracks[0].data = append(tracks[0].data, 0xf8, 0xff, 0xfe)
	}
	for _, c := range []container{&fmp4Writer{}, &mkvWriter{}} {
		h, _ := c.header(tracks)
		b := append([]byte(nil), h...)
		fr, _ := c.fragment(tracks)
		b = append(b, fr...)
		if _, ok := c.(*fmp4Writer); ok {
			mp4File = b
		} else {
			mkvFile = b
		}
	}
	return mp4File, mkvFile
}

func FuzzScanFMP4(f *testing.F) {
	m, _ := seedFiles()
	f.Add(m)
	f.Add(m[:len(m)-7])
	f.Fuzz(func(t *testing.T, data []byte) {
		good, dur, err := scanFMP4(bytes.NewReader(data), int64(len(data)))
		if err == nil && (good < 0 || good > int64(len(data)) || dur < 0) {
			t.Fatalf("good %d of %d, duration %d", good, len(data), dur)
		}
	})
}

func FuzzScanMKV(f *testing.F) {
	_, m := seedFiles()
	f.Add(m)
	f.Add(m[:len(m)-7])
	f.Fuzz(func(t *testing.T, data []byte) {
		good, _, err := scanMKV(bytes.NewReader(data), int64(len(data)))
		if err == nil && (good < 0 || good > int64(len(data))) {
			t.Fatalf("good %d of %d", good, len(data))
		}
	})
}

// TestScanOwnFiles checks that recovery measures files of our writers exactly and cuts a
// partial fragment off.
func TestScanOwnFiles(t *testing.T) {
	m, k := seedFiles()
	for name, tc := range map[string]struct {
		data []byte
		scan func(r *bytes.Reader, n int64) (int64, int64, error)
	}{
		"mp4": {m, func(r *bytes.Reader, n int64) (int64, int64, error) { return scanFMP4(r, n) }},
		"mkv": {k, func(r *bytes.Reader, n int64) (int64, int64, error) { return scanMKV(r, n) }},
	} {
		good, dur, err := tc.scan(bytes.NewReader(tc.data), int64(len(tc.data)))
		if err != nil || good != int64(len(tc.data)) {
			t.Errorf("%s: whole file: good %d of %d, %v", name, good, len(tc.data), err)
		}
		if name == "mp4" && dur != 100 {
			t.Errorf("mp4 duration %d ms, want 100", dur)
		}
		cut := append(append([]byte(nil), tc.data...), tc.data[len(tc.data)-20:]...)
		good2, _, err := tc.scan(bytes.NewReader(cut), int64(len(cut)))
		if err != nil || good2 != int64(len(tc.data)) {
			t.Errorf("%s: with a partial tail: good %d, want %d (%v)", name, good2, len(tc.data), err)
		}
	}
}

// TestFragmentMatchesMediacommon holds our fragment encoder byte-equal to mediacommon's
// fmp4.Part.Marshal.
func TestFragmentMatchesMediacommon(t *testing.T) {
	tracks := []*fileTrack{
		{id: 1, codec: sfu.CodecH264, kind: sfu.KindVideo, clock: 90000},
		{id: 2, codec: sfu.CodecOpus, kind: sfu.KindAudio, clock: 48000},
		{id: 3, codec: sfu.CodecOpus, kind: sfu.KindAudio, clock: 48000}, // no samples this time
	}
	for i := range 7 {
		key := i%4 == 0
		tracks[0].samples = append(tracks[0].samples, sample{dts: 90000 + int64(i)*3000, ptsOff: int32((i%3 - 1) * 3000), dur: 3000, key: key, n: 10 + i})
		tracks[0].data = append(tracks[0].data, bytes.Repeat([]byte{byte(i)}, 10+i)...)
	}
	for i := range 5 {
		tracks[1].samples = append(tracks[1].samples, sample{dts: int64(i) * 960, dur: 960, key: true, n: 3})
		tracks[1].data = append(tracks[1].data, 1, 2, byte(i))
	}
	var w fmp4Writer
	w.seq = 41
	ours, err := w.fragment(tracks)
	if err != nil {
		t.Fatal(err)
	}
	part := fmp4.Part{SequenceNumber: 42}
	for _, tr := range tracks {
		if len(tr.samples) == 0 {
			continue
		}
		pt := &fmp4.PartTrack{ID: tr.id, BaseTime: uint64(tr.samples[0].dts)}
		off := 0
		for _, s := range tr.samples {
			pt.Samples = append(pt.Samples, &fmp4.Sample{Duration: s.dur, PTSOffset: s.ptsOff, IsNonSyncSample: !s.key, Payload: tr.data[off : off+s.n]})
			off += s.n
		}
		part.Tracks = append(part.Tracks, pt)
	}
	var buf seekablebuffer.Buffer
	if err := part.Marshal(&buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ours, buf.Bytes()) {
		t.Fatalf("fragment differs from mediacommon's:\nours   %x\ntheirs %x", ours, buf.Bytes())
	}
}
