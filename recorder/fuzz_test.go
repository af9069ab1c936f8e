package recorder

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	"github.com/pion/rtp"

	"github.com/sluice-media/sluice/sfu"
)

// packetsOf splits fuzz input into RTP payloads: each packet is a 1-byte flags (bit 0 marker,
// bit 1 loss, bit 2 new timestamp) and a 1-byte length, then the payload.
func packetsOf(data []byte, fn func(payload []byte, marker, lost, newTS bool)) {
	for len(data) >= 2 {
		flags, n := data[0], int(data[1])
		data = data[2:]
		if n > len(data) {
			n = len(data)
		}
		fn(data[:n], flags&1 != 0, flags&2 != 0, flags&4 != 0)
		data = data[n:]
	}
}

// checkAVCC asserts an access unit is well-formed length-prefixed NAL units matching its views.
func checkAVCC(t *testing.T, au *accessUnit) {
	if au.broken {
		return
	}
	b := au.avcc
	i := 0
	for len(b) > 0 {
		if len(b) < 4 {
			t.Fatalf("truncated length prefix")
		}
		n := int(binary.BigEndian.Uint32(b))
		if n == 0 || n > len(b)-4 || i >= len(au.nalus) || !bytes.Equal(b[4:4+n], au.nalus[i]) {
			t.Fatalf("access unit does not match its NAL units")
		}
		b = b[4+n:]
		i++
	}
	if i != len(au.nalus) {
		t.Fatalf("%d NAL units in AVCC, %d views", i, len(au.nalus))
	}
}

func FuzzNALUDepacketizer(f *testing.F) {
	f.Add([]byte{1, 5, 0x65, 1, 2, 3, 4})                                           // single IDR with marker
	f.Add([]byte{0, 12, 0x78, 0, 4, 0x67, 0x42, 0, 0x1f, 0, 3, 0x68, 0xce, 0x3c})   // STAP-A
	f.Add([]byte{0, 4, 0x7c, 0x85, 1, 2, 0, 3, 0x7c, 0x05, 3, 1, 3, 0x7c, 0x45, 4}) // FU-A start, middle, end
	f.Add([]byte{1, 6, 0x26, 0x01, 0xaf, 1, 2, 3})                                  // H.265 IDR
	f.Add([]byte{0, 5, 0x62, 0x01, 0x93, 1, 2, 1, 5, 0x62, 0x01, 0x53, 3, 4})       // H.265 FU
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, h265 := range []bool{false, true} {
			d := newNALUDepacketizer(h265)
			var ts uint32
			packetsOf(data, func(p []byte, marker, lost, newTS bool) {
				if newTS {
					ts += 3000
				}
				d.push(p, ts, marker, lost, func(au *accessUnit) { checkAVCC(t, au) })
			})
		}
	})
}

// FuzzVideoDepacketizers drives every video depacketizer (ours and gortsplib's, with the
// mediacommon DTS extractors behind H.264/H.265) with arbitrary packets: nothing may panic.
func FuzzVideoDepacketizers(f *testing.F) {
	f.Add([]byte{1, 5, 0x65, 1, 2, 3, 4})
	f.Add([]byte{1, 12, 0x78, 0, 4, 0x67, 0x42, 0, 0x1f, 0, 3, 0x68, 0xce, 0x3c})
	f.Add([]byte{1, 8, 0x10, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, name := range []string{sfu.CodecH264, sfu.CodecH265, sfu.CodecVP8, sfu.CodecVP9, sfu.CodecAV1, sfu.CodecOpus, sfu.CodecPCMU} {
			dep, err := newDepacketizer(sfu.Codec{Name: name, ClockRate: 90000})
			if err != nil {
				t.Fatal(err)
			}
			var seq uint16
			var ts uint32
			var last int64 = -1 << 62
			check := func(fr *frame) {
				if fr.dts > fr.pts && name != sfu.CodecH264 && name != sfu.CodecH265 {
					t.Fatalf("%s: dts after pts", name)
				}
				if (name == sfu.CodecH264 || name == sfu.CodecH265) && fr.dts <= last {
					t.Fatalf("%s: decode times not increasing: %d after %d", name, fr.dts, last)
				}
				last = fr.dts
			}
			packetsOf(data, func(p []byte, marker, lost, newTS bool) {
				if newTS {
					ts += 3000
				}
				seq++
				pk := &sfu.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: ts, Marker: marker}, Payload: p}
				dep.write(pk, int64(ts), lost, check)
				dep.config()
			})
			dep.end(check)
		}
	})
}

// seedFiles returns a small fMP4 and a small Matroska file made by our writers.
func seedFiles() (mp4File, mkvFile []byte) {
	tracks := []*fileTrack{
		{id: 1, codec: sfu.CodecOpus, kind: sfu.KindAudio, clock: 48000, cfg: codecConfig{channels: 2, sampleRate: 48000}},
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
