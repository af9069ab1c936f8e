package media

import (
	"encoding/binary"
)

// Bounds of what a reader assembles: an access unit larger than maxAccessUnit bytes or with
// more than maxNALUs NAL units is dropped.
const (
	maxAccessUnit = 8 << 20
	maxNALUs      = 256
)

// NAL unit types used by name (ITU-T H.264 table 7-1).
const (
	naluIDR = 5
	naluSPS = 7
	naluPPS = 8
)

// naluDepacketizer reassembles H.264 or H.265 RTP payloads into access units in AVCC form
// (each NAL unit preceded by its 4-byte big-endian length), in buffers it reuses: after warm-up
// it allocates nothing per packet. Access units are split on the marker bit and on a timestamp
// change (for senders that do not set the marker). Access-unit delimiters and filler data are
// dropped. It is owned by one goroutine.
//
// Specifications: H.264 RFC 6184 (single NAL unit, STAP-A, FU-A), H.265 RFC 7798 (single NAL
// unit, AP, FU; without DONL, i.e. sprop-max-don-diff=0).
type naluDepacketizer struct {
	h265 bool

	au      []byte   // AVCC bytes of the access unit being assembled
	nalus   []naluAt // positions of the NAL units in au
	ts      uint32
	started bool // au holds data of the access unit with timestamp ts
	broken  bool // part of the access unit was lost or malformed: drop it
	fuAt    int  // offset in au of the length prefix of the NAL unit an FU is building, -1: none

	views [][]byte   // NAL unit views handed out with an access unit
	out   accessUnit // the access unit handed out (a field: a local would escape to emit)
}

type naluAt struct{ off, n int }

// accessUnit is one complete access unit, valid until the next call into the depacketizer.
type accessUnit struct {
	ts       uint32
	avcc     []byte   // length-prefixed NAL units
	nalus    [][]byte // the same NAL units without prefixes
	keyframe bool     // holds an IDR (H.264) or IRAP (H.265) picture
	broken   bool     // incomplete: must not be decoded
}

func newNALUDepacketizer(h265 bool) *naluDepacketizer {
	return &naluDepacketizer{h265: h265, fuAt: -1}
}

// swap hands out the buffer of the access unit just emitted (valid during emit only) and
// assembles the next access units into buf instead.
func (d *naluDepacketizer) swap(buf []byte) []byte {
	b := d.au
	d.au = buf[:0]
	return b
}

// reset forgets the access unit being assembled (after a loss).
func (d *naluDepacketizer) reset() {
	d.au = d.au[:0]
	d.nalus = d.nalus[:0]
	d.started = false
	d.broken = false
	d.fuAt = -1
}

// push consumes one RTP payload. It returns up to two completed access units: the previous one
// when ts changed without a marker, then the current one when marker is set. lost reports that
// packets are missing before this one.
func (d *naluDepacketizer) push(payload []byte, ts uint32, marker, lost bool, emit func(*accessUnit)) {
	if d.started && ts != d.ts {
		d.flush(emit)
	}
	if !d.started {
		d.started, d.ts, d.broken = true, ts, false
	}
	if lost {
		d.broken = true
		d.fuAt = -1
	}
	d.payload(payload)
	if len(d.au) > maxAccessUnit || len(d.nalus) > maxNALUs {
		d.broken = true
		d.au, d.nalus, d.fuAt = d.au[:0], d.nalus[:0], -1
	}
	if marker {
		d.flush(emit)
	}
}

// flush hands out the access unit being assembled, if any.
func (d *naluDepacketizer) flush(emit func(*accessUnit)) {
	if !d.started {
		return
	}
	if d.fuAt >= 0 { // an FU without its end
		d.broken = true
	}
	d.out = accessUnit{ts: d.ts, avcc: d.au, broken: d.broken}
	au := &d.out
	d.views = d.views[:0]
	for _, n := range d.nalus {
		v := d.au[n.off : n.off+n.n]
		d.views = append(d.views, v)
		if d.isKey(v) {
			au.keyframe = true
		}
	}
	au.nalus = d.views
	if len(au.nalus) > 0 || au.broken {
		emit(au)
	}
	d.reset()
}

func (d *naluDepacketizer) isKey(nalu []byte) bool {
	if d.h265 {
		t := (nalu[0] >> 1) & 0x3f
		return t >= 16 && t <= 21
	}
	return nalu[0]&0x1f == naluIDR
}

// payload parses one RTP payload into the access unit.
func (d *naluDepacketizer) payload(p []byte) {
	hdr := 1
	if d.h265 {
		hdr = 2
	}
	if len(p) < hdr {
		d.broken = true
		return
	}
	var typ byte
	if d.h265 {
		typ = (p[0] >> 1) & 0x3f
	} else {
		typ = p[0] & 0x1f
	}
	switch {
	case !d.h265 && typ == 24, d.h265 && typ == 48: // STAP-A / AP
		d.endFU()
		for i := hdr; i < len(p); {
			if i+2 > len(p) {
				d.broken = true
				return
			}
			size := int(binary.BigEndian.Uint16(p[i:]))
			i += 2
			if size == 0 || i+size > len(p) {
				d.broken = true
				return
			}
			d.addNALU(p[i : i+size])
			i += size
		}
	case !d.h265 && typ == 28: // FU-A
		if len(p) < 2 {
			d.broken = true
			return
		}
		d.fragment(p[1]&0x80 != 0, p[1]&0x40 != 0, []byte{p[0]&0xe0 | p[1]&0x1f}, p[2:])
	case d.h265 && typ == 49: // FU
		if len(p) < 3 {
			d.broken = true
			return
		}
		d.fragment(p[2]&0x80 != 0, p[2]&0x40 != 0, []byte{p[0]&0x81 | (p[2]&0x3f)<<1, p[1]}, p[3:])
	case !d.h265 && (typ == 0 || typ >= 24), d.h265 && typ >= 48: // STAP-B, MTAP, FU-B, PACI, reserved
		d.endFU()
		d.broken = true
	default:
		d.endFU()
		d.addNALU(p)
	}
}

// endFU marks an unfinished fragmented NAL unit as lost.
func (d *naluDepacketizer) endFU() {
	if d.fuAt >= 0 {
		d.broken = true
		d.fuAt = -1
	}
}

// fragment adds one FU-A / FU fragment; header is the reconstructed NAL header (it does not
// escape: the compiler keeps the small literal on the stack).
func (d *naluDepacketizer) fragment(start, end bool, header, body []byte) {
	if start {
		d.endFU()
		d.fuAt = len(d.au)
		d.au = append(d.au, 0, 0, 0, 0)
		d.au = append(d.au, header...)
	} else if d.fuAt < 0 {
		d.broken = true // a middle or end without its start
		return
	}
	d.au = append(d.au, body...)
	if end {
		n := len(d.au) - d.fuAt - 4
		binary.BigEndian.PutUint32(d.au[d.fuAt:], uint32(n))
		d.nalus = append(d.nalus, naluAt{d.fuAt + 4, n})
		d.fuAt = -1
		d.dropFiller()
	}
}

// addNALU appends a complete NAL unit.
func (d *naluDepacketizer) addNALU(n []byte) {
	if len(n) == 0 {
		return
	}
	if d.dropped(n) {
		return
	}
	d.au = binary.BigEndian.AppendUint32(d.au, uint32(len(n)))
	d.nalus = append(d.nalus, naluAt{len(d.au), len(n)})
	d.au = append(d.au, n...)
}

// dropFiller removes the NAL unit an FU just completed when it is a delimiter or filler.
func (d *naluDepacketizer) dropFiller() {
	last := d.nalus[len(d.nalus)-1]
	if last.n == 0 || d.dropped(d.au[last.off:last.off+last.n]) {
		d.au = d.au[:last.off-4]
		d.nalus = d.nalus[:len(d.nalus)-1]
	}
}

// dropped reports NAL units a file does not keep: access-unit delimiters and filler data.
func (d *naluDepacketizer) dropped(n []byte) bool {
	if d.h265 {
		if len(n) < 2 {
			return true
		}
		t := (n[0] >> 1) & 0x3f
		return t == 35 || t == 38
	}
	t := n[0] & 0x1f
	return t == 9 || t == 12
}
