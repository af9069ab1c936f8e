package recorder

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
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
	cfg   media.Params

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

// errUnsupportedCodec is returned for a codec no container of the recorder takes.
var errUnsupportedCodec = errors.New("codec not supported by the recorder")

// mp4Codec maps a track to mediacommon's fMP4 codec, or an error when MP4 cannot hold it.
func mp4Codec(codec string, cfg media.Params) (mp4.Codec, error) {
	switch codec {
	case sfu.CodecH264:
		return &mp4.CodecH264{SPS: cfg.SPS, PPS: cfg.PPS}, nil
	case sfu.CodecH265:
		return &mp4.CodecH265{VPS: cfg.VPS, SPS: cfg.SPS, PPS: cfg.PPS}, nil
	case sfu.CodecAV1:
		return &mp4.CodecAV1{SequenceHeader: cfg.AV1SequenceHeader}, nil
	case sfu.CodecVP9:
		h := cfg.VP9
		if h == nil || h.ColorConfig == nil {
			return nil, fmt.Errorf("vp9 without a keyframe header")
		}
		return &mp4.CodecVP9{Width: h.Width(), Height: h.Height(), Profile: h.Profile,
			BitDepth: h.ColorConfig.BitDepth, ChromaSubsampling: h.ChromaSubsampling(), ColorRange: h.ColorConfig.ColorRange}, nil
	case sfu.CodecOpus:
		return &mp4.CodecOpus{ChannelCount: cfg.Channels}, nil
	case sfu.CodecAAC:
		if cfg.AAC == nil {
			return nil, fmt.Errorf("aac without config")
		}
		return &mp4.CodecMPEG4Audio{Config: *cfg.AAC}, nil
	case sfu.CodecPCMU, sfu.CodecPCMA:
		return &mp4.CodecLPCM{LittleEndian: false, BitDepth: 16, SampleRate: cfg.SampleRate, ChannelCount: cfg.Channels}, nil
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

// fmp4Writer writes fragmented MP4 (ISO/IEC 14496-12): an init segment (ftyp+moov) made by
// mediacommon's fmp4, then one moof+mdat per fragment, so that a file cut anywhere plays up to
// its last complete fragment.
//
// The fragments are encoded here, byte for byte as mediacommon's fmp4.Part.Marshal lays them
// out (a test holds the two equal), into a buffer reused between fragments: mediacommon's
// reflection-based box writer costs dozens of allocations per sample, which the recording path
// does not pay.
type fmp4Writer struct {
	seq uint32
	buf seekablebuffer.Buffer
	out []byte
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

// trun flags (ISO/IEC 14496-12 §8.8.8) and the non-sync sample flag.
const (
	trunDataOffset   = 0x01
	trunDuration     = 0x100
	trunSize         = 0x200
	trunFlags        = 0x400
	trunCompositions = 0x800
	sampleNonSync    = 1 << 16
)

func be32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }

// boxStart appends a box header with a size to patch; it returns the box's offset.
func boxStart(b []byte, typ string) ([]byte, int) {
	at := len(b)
	b = be32(b, 0)
	return append(b, typ...), at
}

func boxEnd(b []byte, at int) {
	binary.BigEndian.PutUint32(b[at:], uint32(len(b)-at))
}

// fragment encodes moof(mfhd, traf(tfhd, tfdt, trun)...) + mdat for the tracks with samples.
func (w *fmp4Writer) fragment(tracks []*fileTrack) ([]byte, error) {
	b := w.out[:0]
	b, moof := boxStart(b, "moof")
	b, mfhd := boxStart(b, "mfhd")
	b = be32(b, 0) // version, flags
	b = be32(b, w.seq+1)
	boxEnd(b, mfhd)
	var offsets [8]int // where each track's data_offset is, to patch
	if len(tracks) > len(offsets) {
		return nil, fmt.Errorf("too many tracks in one file")
	}
	n := 0
	for i, t := range tracks {
		offsets[i] = -1
		if len(t.samples) == 0 {
			continue
		}
		n++
		var traf, box int
		b, traf = boxStart(b, "traf")
		b, box = boxStart(b, "tfhd")
		b = be32(b, 0x020000) // default-base-is-moof
		b = be32(b, uint32(t.id))
		boxEnd(b, box)
		b, box = boxStart(b, "tfdt")
		b = be32(b, 1<<24) // version 1
		b = binary.BigEndian.AppendUint64(b, uint64(t.samples[0].dts))
		boxEnd(b, box)
		flags := uint32(trunDataOffset | trunDuration | trunSize)
		for _, s := range t.samples {
			if !s.key {
				flags |= trunFlags
			}
			if s.ptsOff != 0 {
				flags |= trunCompositions
			}
		}
		b, box = boxStart(b, "trun")
		b = be32(b, 1<<24|flags)
		b = be32(b, uint32(len(t.samples)))
		offsets[i] = len(b)
		b = be32(b, 0)
		for _, s := range t.samples {
			b = be32(b, s.dur)
			b = be32(b, uint32(s.n))
			if flags&trunFlags != 0 {
				f := uint32(0)
				if !s.key {
					f = sampleNonSync
				}
				b = be32(b, f)
			}
			if flags&trunCompositions != 0 {
				b = be32(b, uint32(s.ptsOff))
			}
		}
		boxEnd(b, box)
		boxEnd(b, traf)
	}
	if n == 0 {
		return nil, nil
	}
	boxEnd(b, moof)
	b, mdat := boxStart(b, "mdat")
	for i, t := range tracks {
		if offsets[i] >= 0 {
			binary.BigEndian.PutUint32(b[offsets[i]:], uint32(len(b)-moof))
			b = append(b, t.data...)
		}
	}
	boxEnd(b, mdat)
	w.out = b
	w.seq++
	return b, nil
}

func (w *fmp4Writer) trailer([]*fileTrack, int64, int64) []patch { return nil }
