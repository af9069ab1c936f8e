package recorder

import (
	"fmt"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4"

	"github.com/sluice-media/sluice/sfu"
)

// sample is one frame of a fragment being built; its payload sits in fileTrack.data after the
// payloads of the samples before it.
type sample struct {
	dts    int64 // in the track's timescale, from the start of the file
	ptsOff int32
	dur    uint32
	key    bool
	n      int
}

// fileTrack is one track of one segment file and the samples of its next fragment.
type fileTrack struct {
	id    int // 1-based, in header order
	codec string
	kind  sfu.Kind
	clock uint32
	cfg   codecConfig

	samples []sample
	data    []byte

	// end is the end (dts + duration) of the last written sample, in ticks.
	end int64
}

// container writes one file format. Methods are called by the capture goroutine only.
type container interface {
	// header returns the file header for the tracks.
	header(tracks []*fileTrack) ([]byte, error)
	// fragment returns the bytes of one fragment holding every track's pending samples.
	fragment(tracks []*fileTrack) ([]byte, error)
	// trailer returns patches applied when the file is closed cleanly (offset, bytes).
	trailer(tracks []*fileTrack, durationMs, size int64) []patch
}

type patch struct {
	off  int64
	data []byte
}

// mp4Codec maps a track to mediacommon's fMP4 codec, or an error when MP4 cannot hold it.
func mp4Codec(codec string, cfg codecConfig) (mp4.Codec, error) {
	switch codec {
	case sfu.CodecH264:
		return &mp4.CodecH264{SPS: cfg.sps, PPS: cfg.pps}, nil
	case sfu.CodecH265:
		return &mp4.CodecH265{VPS: cfg.vps, SPS: cfg.sps, PPS: cfg.pps}, nil
	case sfu.CodecAV1:
		return &mp4.CodecAV1{SequenceHeader: cfg.av1SeqHeader}, nil
	case sfu.CodecVP9:
		h := cfg.vp9
		if h == nil || h.ColorConfig == nil {
			return nil, fmt.Errorf("vp9 without a keyframe header")
		}
		return &mp4.CodecVP9{Width: h.Width(), Height: h.Height(), Profile: h.Profile,
			BitDepth: h.ColorConfig.BitDepth, ChromaSubsampling: h.ChromaSubsampling(), ColorRange: h.ColorConfig.ColorRange}, nil
	case sfu.CodecOpus:
		return &mp4.CodecOpus{ChannelCount: cfg.channels}, nil
	case sfu.CodecAAC:
		if cfg.aac == nil {
			return nil, fmt.Errorf("aac without config")
		}
		return &mp4.CodecMPEG4Audio{Config: *cfg.aac}, nil
	case sfu.CodecPCMU, sfu.CodecPCMA:
		return &mp4.CodecLPCM{LittleEndian: false, BitDepth: 16, SampleRate: cfg.sampleRate, ChannelCount: cfg.channels}, nil
	}
	return nil, fmt.Errorf("%w in mp4: %s", errUnsupportedCodec, codec)
}

// mp4Holds reports whether fragmented MP4 can carry the codec.
func mp4Holds(codec string) bool {
	switch codec {
	case sfu.CodecH264, sfu.CodecH265, sfu.CodecAV1, sfu.CodecVP9, sfu.CodecOpus, sfu.CodecAAC, sfu.CodecPCMU, sfu.CodecPCMA:
		return true
	}
	return false
}

// fmp4Writer writes fragmented MP4 (ISO/IEC 14496-12) through mediacommon: an init segment
// (ftyp+moov) then one moof+mdat per fragment, so that a file cut anywhere plays up to its last
// complete fragment. It reuses its sample tables between fragments.
type fmp4Writer struct {
	seq   uint32
	buf   seekablebuffer.Buffer
	parts []*fmp4.PartTrack
	store [][]fmp4.Sample
	ptrs  [][]*fmp4.Sample
}

func (w *fmp4Writer) header(tracks []*fileTrack) ([]byte, error) {
	init := fmp4.Init{}
	for _, t := range tracks {
		c, err := mp4Codec(t.codec, t.cfg)
		if err != nil {
			return nil, err
		}
		init.Tracks = append(init.Tracks, &fmp4.InitTrack{ID: t.id, TimeScale: t.clock, Codec: c})
	}
	w.buf.Reset()
	if _, err := w.buf.Seek(0, 0); err != nil {
		return nil, err
	}
	if err := init.Marshal(&w.buf); err != nil {
		return nil, err
	}
	return w.buf.Bytes(), nil
}

func (w *fmp4Writer) fragment(tracks []*fileTrack) ([]byte, error) {
	for len(w.parts) < len(tracks) {
		w.parts = append(w.parts, &fmp4.PartTrack{})
		w.store = append(w.store, nil)
		w.ptrs = append(w.ptrs, nil)
	}
	part := fmp4.Part{SequenceNumber: w.seq + 1}
	for i, t := range tracks {
		if len(t.samples) == 0 {
			continue
		}
		st := w.store[i][:0]
		off := 0
		for _, s := range t.samples {
			st = append(st, fmp4.Sample{Duration: s.dur, PTSOffset: s.ptsOff, IsNonSyncSample: !s.key, Payload: t.data[off : off+s.n]})
			off += s.n
		}
		w.store[i] = st
		ptrs := w.ptrs[i][:0]
		for j := range st {
			ptrs = append(ptrs, &st[j])
		}
		w.ptrs[i] = ptrs
		pt := w.parts[i]
		pt.ID, pt.BaseTime, pt.Samples = t.id, uint64(t.samples[0].dts), ptrs
		part.Tracks = append(part.Tracks, pt)
	}
	if len(part.Tracks) == 0 {
		return nil, nil
	}
	w.buf.Reset()
	if _, err := w.buf.Seek(0, 0); err != nil {
		return nil, err
	}
	if err := part.Marshal(&w.buf); err != nil {
		return nil, err
	}
	w.seq++
	return w.buf.Bytes(), nil
}

func (w *fmp4Writer) trailer([]*fileTrack, int64, int64) []patch { return nil }
