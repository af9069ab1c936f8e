package recorder

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"

	"github.com/sluice-media/sluice/sfu"
)

// Matroska element IDs (https://www.matroska.org/technical/elements.html, RFC 9559).
const (
	mkvEBML               = 0x1A45DFA3
	mkvEBMLVersion        = 0x4286
	mkvEBMLReadVersion    = 0x42F7
	mkvEBMLMaxIDLength    = 0x42F2
	mkvEBMLMaxSizeLength  = 0x42F3
	mkvDocType            = 0x4282
	mkvDocTypeVersion     = 0x4287
	mkvDocTypeReadVersion = 0x4285
	mkvSegment            = 0x18538067
	mkvInfo               = 0x1549A966
	mkvTimestampScale     = 0x2AD7B1
	mkvMuxingApp          = 0x4D80
	mkvWritingApp         = 0x5741
	mkvDuration           = 0x4489
	mkvVoid               = 0xEC
	mkvTracks             = 0x1654AE6B
	mkvTrackEntry         = 0xAE
	mkvTrackNumber        = 0xD7
	mkvTrackUID           = 0x73C5
	mkvTrackType          = 0x83
	mkvFlagLacing         = 0x9C
	mkvCodecID            = 0x86
	mkvCodecPrivate       = 0x63A2
	mkvCodecDelay         = 0x56AA
	mkvSeekPreRoll        = 0x56BB
	mkvVideo              = 0xE0
	mkvPixelWidth         = 0xB0
	mkvPixelHeight        = 0xBA
	mkvAudio              = 0xE1
	mkvSamplingFrequency  = 0xB5
	mkvChannels           = 0x9F
	mkvBitDepth           = 0x6264
	mkvCluster            = 0x1F43B675
	mkvTimestamp          = 0xE7
	mkvSimpleBlock        = 0xA3
)

// mkvUnknownSize is the 8-byte "unknown" element size (all value bits set).
const mkvUnknownSize = 0x01FFFFFFFFFFFFFF

// mkvHolds reports whether the Matroska writer can carry the codec.
func mkvHolds(codec string) bool {
	switch codec {
	case sfu.CodecVP8, sfu.CodecVP9, sfu.CodecH264, sfu.CodecOpus, sfu.CodecAAC, sfu.CodecPCMU, sfu.CodecPCMA:
		return true
	}
	return false
}

// webmHolds reports whether the codec is allowed in WebM (the Matroska subset browsers play).
func webmHolds(codec string) bool {
	switch codec {
	case sfu.CodecVP8, sfu.CodecVP9, sfu.CodecAV1, sfu.CodecOpus:
		return true
	}
	return false
}

// mkvWriter writes Matroska (WebM when every codec allows it) that survives a crash: the
// Segment has an unknown size (patched at a clean close), and each fragment is one Cluster of
// SimpleBlocks written at once, so a cut file is valid up to its last complete Cluster. Block
// timestamps are presentation times in milliseconds.
type mkvWriter struct {
	segmentSize int64 // offset of the Segment's size field
	segmentData int64 // offset of the Segment's first child
	durationAt  int64 // offset of the Void that the Duration replaces
	order       []mkvRef
	body        []byte
}

type mkvRef struct {
	track, sample int
	off           int
	ms            int64 // presentation time, the block's timestamp
	order         int64 // decode time in µs, the order of blocks
}

// ebmlID appends an element ID (its bytes carry their own length marker).
func ebmlID(b []byte, id uint32) []byte {
	switch {
	case id >= 1<<24:
		return append(b, byte(id>>24), byte(id>>16), byte(id>>8), byte(id))
	case id >= 1<<16:
		return append(b, byte(id>>16), byte(id>>8), byte(id))
	case id >= 1<<8:
		return append(b, byte(id>>8), byte(id))
	}
	return append(b, byte(id))
}

// ebmlSize appends a data size as an 8-byte variable-length integer.
func ebmlSize(b []byte, n uint64) []byte {
	return binary.BigEndian.AppendUint64(b, n|1<<56)
}

func ebmlUint(b []byte, id uint32, v uint64) []byte {
	b = ebmlID(b, id)
	n := 1
	for v>>(8*n) != 0 && n < 8 {
		n++
	}
	b = append(b, 0x80|byte(n))
	for i := n - 1; i >= 0; i-- {
		b = append(b, byte(v>>(8*i)))
	}
	return b
}

func ebmlFloat(b []byte, id uint32, v float64) []byte {
	b = ebmlID(b, id)
	b = append(b, 0x88)
	return binary.BigEndian.AppendUint64(b, math.Float64bits(v))
}

func ebmlBytes(b []byte, id uint32, v []byte) []byte {
	b = ebmlID(b, id)
	b = ebmlSize(b, uint64(len(v)))
	return append(b, v...)
}

// ebmlMaster appends a master element around the children built by fn.
func ebmlMaster(b []byte, id uint32, fn func([]byte) []byte) []byte {
	b = ebmlID(b, id)
	at := len(b)
	b = ebmlSize(b, 0)
	start := len(b)
	b = fn(b)
	binary.BigEndian.PutUint64(b[at:], uint64(len(b)-start)|1<<56)
	return b
}

func mkvCodecName(codec string) string {
	switch codec {
	case sfu.CodecVP8:
		return "V_VP8"
	case sfu.CodecVP9:
		return "V_VP9"
	case sfu.CodecH264:
		return "V_MPEG4/ISO/AVC"
	case sfu.CodecOpus:
		return "A_OPUS"
	case sfu.CodecAAC:
		return "A_AAC"
	case sfu.CodecPCMU, sfu.CodecPCMA:
		return "A_PCM/INT/BIG"
	}
	return ""
}

// avcConfig builds an AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1) with 4-byte
// NAL unit lengths.
func avcConfig(sps, pps []byte) []byte {
	if len(sps) < 4 {
		return nil
	}
	b := []byte{1, sps[1], sps[2], sps[3], 0xff, 0xe1}
	b = binary.BigEndian.AppendUint16(b, uint16(len(sps)))
	b = append(b, sps...)
	b = append(b, 1)
	b = binary.BigEndian.AppendUint16(b, uint16(len(pps)))
	return append(b, pps...)
}

// opusHead builds the Opus identification header (RFC 7845 §5.1) with no pre-skip.
func opusHead(channels int) []byte {
	b := []byte("OpusHead")
	b = append(b, 1, byte(channels), 0, 0)
	b = binary.LittleEndian.AppendUint32(b, 48000)
	return append(b, 0, 0, 0)
}

func (w *mkvWriter) header(tracks []*fileTrack) ([]byte, error) {
	docType := "webm"
	for _, t := range tracks {
		if mkvCodecName(t.codec) == "" {
			return nil, fmt.Errorf("%w in mkv: %s", errUnsupportedCodec, t.codec)
		}
		if !webmHolds(t.codec) {
			docType = "matroska"
		}
	}
	b := ebmlMaster(nil, mkvEBML, func(b []byte) []byte {
		b = ebmlUint(b, mkvEBMLVersion, 1)
		b = ebmlUint(b, mkvEBMLReadVersion, 1)
		b = ebmlUint(b, mkvEBMLMaxIDLength, 4)
		b = ebmlUint(b, mkvEBMLMaxSizeLength, 8)
		b = ebmlBytes(b, mkvDocType, []byte(docType))
		b = ebmlUint(b, mkvDocTypeVersion, 4)
		return ebmlUint(b, mkvDocTypeReadVersion, 2)
	})
	b = ebmlID(b, mkvSegment)
	w.segmentSize = int64(len(b))
	b = binary.BigEndian.AppendUint64(b, mkvUnknownSize)
	w.segmentData = int64(len(b))
	b = ebmlMaster(b, mkvInfo, func(b []byte) []byte {
		b = ebmlUint(b, mkvTimestampScale, 1_000_000)
		b = ebmlBytes(b, mkvMuxingApp, []byte("sluice"))
		b = ebmlBytes(b, mkvWritingApp, []byte("sluice"))
		w.durationAt = int64(len(b))
		// Room for the Duration (ID 2 + size 1 + float 8 = 11 bytes), written at a clean close.
		b = append(b, mkvVoid, 0x89)
		return append(b, make([]byte, 9)...)
	})
	b = ebmlMaster(b, mkvTracks, func(b []byte) []byte {
		for _, t := range tracks {
			b = ebmlMaster(b, mkvTrackEntry, func(b []byte) []byte { return mkvTrack(b, t) })
		}
		return b
	})
	return b, nil
}

func mkvTrack(b []byte, t *fileTrack) []byte {
	b = ebmlUint(b, mkvTrackNumber, uint64(t.id))
	b = ebmlUint(b, mkvTrackUID, uint64(t.id))
	typ := uint64(2)
	if t.kind == sfu.KindVideo {
		typ = 1
	}
	b = ebmlUint(b, mkvTrackType, typ)
	b = ebmlUint(b, mkvFlagLacing, 0)
	b = ebmlBytes(b, mkvCodecID, []byte(mkvCodecName(t.codec)))
	switch t.codec {
	case sfu.CodecH264:
		b = ebmlBytes(b, mkvCodecPrivate, avcConfig(t.cfg.SPS, t.cfg.PPS))
	case sfu.CodecOpus:
		b = ebmlBytes(b, mkvCodecPrivate, opusHead(t.cfg.Channels))
		b = ebmlUint(b, mkvCodecDelay, 0)
		b = ebmlUint(b, mkvSeekPreRoll, 80_000_000)
	case sfu.CodecAAC:
		if t.cfg.AAC != nil {
			if asc, err := t.cfg.AAC.Marshal(); err == nil {
				b = ebmlBytes(b, mkvCodecPrivate, asc)
			}
		}
	}
	if t.kind == sfu.KindVideo {
		return ebmlMaster(b, mkvVideo, func(b []byte) []byte {
			b = ebmlUint(b, mkvPixelWidth, uint64(t.cfg.Width))
			return ebmlUint(b, mkvPixelHeight, uint64(t.cfg.Height))
		})
	}
	return ebmlMaster(b, mkvAudio, func(b []byte) []byte {
		b = ebmlFloat(b, mkvSamplingFrequency, float64(t.cfg.SampleRate))
		b = ebmlUint(b, mkvChannels, uint64(max(t.cfg.Channels, 1)))
		if t.codec == sfu.CodecPCMU || t.codec == sfu.CodecPCMA {
			b = ebmlUint(b, mkvBitDepth, 16)
		}
		return b
	})
}

// fragment writes the pending samples as Clusters, blocks in decode order interleaved by decode
// time, each stamped with its presentation time. A Cluster spans at most 30 s so that block
// offsets fit their 16 bits.
func (w *mkvWriter) fragment(tracks []*fileTrack) ([]byte, error) {
	w.order = w.order[:0]
	for ti, t := range tracks {
		off := 0
		for si, s := range t.samples {
			pts := s.dts + int64(s.ptsOff)
			w.order = append(w.order, mkvRef{track: ti, sample: si, off: off, ms: pts * 1000 / int64(t.clock), order: s.dts * 1_000_000 / int64(t.clock)})
			off += s.n
		}
	}
	if len(w.order) == 0 {
		return nil, nil
	}
	sort.SliceStable(w.order, func(i, j int) bool { return w.order[i].order < w.order[j].order })
	w.body = w.body[:0]
	for start := 0; start < len(w.order); {
		base := w.order[start].ms
		end := start
		for end < len(w.order) && w.order[end].ms-base < 30_000 && w.order[end].ms-base > -30_000 {
			end++
		}
		w.body = ebmlMaster(w.body, mkvCluster, func(b []byte) []byte {
			b = ebmlUint(b, mkvTimestamp, uint64(max(base, 0)))
			for _, r := range w.order[start:end] {
				t := tracks[r.track]
				s := t.samples[r.sample]
				b = ebmlID(b, mkvSimpleBlock)
				b = ebmlSize(b, uint64(4+s.n))
				flags := byte(0)
				if s.key {
					flags = 0x80
				}
				b = append(b, 0x80|byte(t.id), byte(uint16(r.ms-max(base, 0))>>8), byte(r.ms-max(base, 0)), flags)
				b = append(b, t.data[r.off:r.off+s.n]...)
			}
			return b
		})
		start = end
	}
	return w.body, nil
}

// trailer writes the Duration over its Void and the Segment's size.
func (w *mkvWriter) trailer(_ []*fileTrack, durationMs, size int64) []patch {
	d := ebmlFloat(nil, mkvDuration, float64(durationMs))
	return []patch{{off: w.durationAt, data: d}, {off: w.segmentSize, data: ebmlSize(nil, uint64(size-w.segmentData))}}
}
