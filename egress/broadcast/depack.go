package broadcast

import (
	"encoding/binary"
	"errors"
)

// The depacketizers turn a track's RTP packets back into the frames FLV carries. They reuse
// their buffers: once warmed up they allocate nothing per packet. Each is owned by one
// subscription goroutine.

// Bounds of what a depacketizer assembles.
const (
	maxAccessUnit = 8 << 20 // an H.264 access unit larger than this is dropped
	maxNALUs      = 256     // NAL units in one access unit
)

var (
	errH264Packet = errors.New("malformed h264 rtp packet")
	errAACPacket  = errors.New("malformed aac rtp packet")
)

// NAL unit types (ITU-T H.264 table 7-1) and RTP payload structures (RFC 6184 §5.4).
const (
	naluNonIDR = 1
	naluIDR    = 5
	naluSEI    = 6
	naluSPS    = 7
	naluPPS    = 8
	naluAUD    = 9
	naluSTAPA  = 24
	naluFUA    = 28
)

// h264Depacketizer reassembles H.264 access units from RTP packets (RFC 6184: single NAL unit,
// STAP-A and FU-A packets, packetization modes 0 and 1). An access unit ends at the RTP marker
// bit or when a packet of a new timestamp arrives.
type h264Depacketizer struct {
	buf     []byte
	offs    []int // start, end pairs into buf
	nalus   [][]byte
	ts      uint32
	started bool // an access unit is in progress
	inFU    bool // a fragmented NAL unit is open (its start is offs[len-1])
	broken  bool // the access unit in progress lost a packet: it is dropped at its end
}

// reset drops the access unit in progress.
func (d *h264Depacketizer) reset() {
	d.buf, d.offs = d.buf[:0], d.offs[:0]
	d.started, d.inFU, d.broken = false, false, false
}

// lost marks the access unit in progress as incomplete.
func (d *h264Depacketizer) lost() {
	if d.started {
		d.broken = true
	}
	d.inFU = false
}

// push adds one packet. When it completes an access unit (or the next one begins), emit is
// called with its NAL units and RTP timestamp; the slices are valid during the call only.
// A malformed packet breaks the access unit in progress and returns an error.
func (d *h264Depacketizer) push(ts uint32, marker bool, payload []byte, emit func(ts uint32, nalus [][]byte)) error {
	if d.started && ts != d.ts {
		d.flush(emit)
	}
	if !d.started {
		d.started, d.ts = true, ts
	}
	err := d.add(payload)
	if err != nil {
		d.broken = true
	}
	if marker {
		d.flush(emit)
	}
	return err
}

func (d *h264Depacketizer) add(p []byte) error {
	if len(p) < 1 {
		return errH264Packet
	}
	switch typ := p[0] & 0x1f; {
	case typ >= 1 && typ <= 23:
		d.inFU = false
		return d.nalu(p)
	case typ == naluSTAPA:
		d.inFU = false
		p = p[1:]
		for len(p) > 0 {
			if len(p) < 2 {
				return errH264Packet
			}
			n := int(binary.BigEndian.Uint16(p))
			p = p[2:]
			if n == 0 || n > len(p) {
				return errH264Packet
			}
			if err := d.nalu(p[:n]); err != nil {
				return err
			}
			p = p[n:]
		}
		return nil
	case typ == naluFUA:
		if len(p) < 3 {
			return errH264Packet
		}
		start, end := p[1]&0x80 != 0, p[1]&0x40 != 0
		if start {
			if err := d.nalu([]byte{p[0]&0xe0 | p[1]&0x1f}); err != nil {
				return err
			}
			d.inFU = true
		} else if !d.inFU {
			return errH264Packet // a fragment whose start was lost
		}
		if len(d.buf)+len(p)-2 > maxAccessUnit {
			return errH264Packet
		}
		d.buf = append(d.buf, p[2:]...)
		d.offs[len(d.offs)-1] = len(d.buf)
		if end {
			d.inFU = false
		}
		return nil
	}
	return errH264Packet
}

// nalu appends one NAL unit to the access unit in progress.
func (d *h264Depacketizer) nalu(n []byte) error {
	if len(d.offs)/2 >= maxNALUs || len(d.buf)+len(n) > maxAccessUnit {
		return errH264Packet
	}
	start := len(d.buf)
	d.buf = append(d.buf, n...)
	d.offs = append(d.offs, start, len(d.buf))
	return nil
}

func (d *h264Depacketizer) flush(emit func(ts uint32, nalus [][]byte)) {
	if d.started && !d.broken && !d.inFU && len(d.offs) > 0 {
		d.nalus = d.nalus[:0]
		for i := 0; i < len(d.offs); i += 2 {
			d.nalus = append(d.nalus, d.buf[d.offs[i]:d.offs[i+1]])
		}
		emit(d.ts, d.nalus)
	}
	d.reset()
}

// aacDepacketizer reads the access units of MPEG4-GENERIC packets (RFC 3640 §3.2, AAC-hbr and
// AAC-lbr: AU-headers of sizeLength + indexLength bits, no auxiliary data). An access unit
// fragmented over several packets (§3.2.3: one AU-header each, the marker bit on the last) is
// reassembled.
type aacDepacketizer struct {
	sizeLength, indexLength int
	frag                    []byte
	fragTS                  uint32
	inFrag                  bool
}

// push reads one packet and calls emit for each complete access unit with its RTP timestamp
// (samples); the slice is valid during the call only.
func (d *aacDepacketizer) push(ts uint32, marker bool, payload []byte, emit func(ts uint32, au []byte)) error {
	if len(payload) < 2 {
		d.inFrag = false
		return errAACPacket
	}
	headerBits := int(binary.BigEndian.Uint16(payload))
	hdrBytes := (headerBits + 7) / 8
	per := d.sizeLength + d.indexLength
	if per == 0 || headerBits == 0 || headerBits%per != 0 || 2+hdrBytes > len(payload) {
		d.inFrag = false
		return errAACPacket
	}
	n := headerBits / per
	hdr := payload[2 : 2+hdrBytes]
	data := payload[2+hdrBytes:]
	if d.inFrag || (n == 1 && !marker) { // a fragment of one access unit
		if d.inFrag && (n != 1 || ts != d.fragTS) {
			d.inFrag = false
			return errAACPacket
		}
		if !d.inFrag {
			d.frag, d.fragTS, d.inFrag = d.frag[:0], ts, true
		}
		if len(d.frag)+len(data) > maxAccessUnit {
			d.inFrag = false
			return errAACPacket
		}
		d.frag = append(d.frag, data...)
		if marker {
			d.inFrag = false
			if len(d.frag) == 0 {
				return errAACPacket
			}
			emit(ts, d.frag)
		}
		return nil
	}
	for i := range n {
		size := int(readBits(hdr, i*per, d.sizeLength))
		if size == 0 || size > len(data) {
			return errAACPacket
		}
		emit(ts+uint32(i)*1024, data[:size])
		data = data[size:]
	}
	return nil
}

// lost drops a fragmented access unit in progress.
func (d *aacDepacketizer) lost() { d.inFrag = false }

// readBits reads n (<= 32) bits of b starting at bit pos, big-endian; missing bits read as 0.
func readBits(b []byte, pos, n int) uint32 {
	var v uint32
	for i := range n {
		bit := pos + i
		v <<= 1
		if bit/8 < len(b) && b[bit/8]&(0x80>>(bit%8)) != 0 {
			v |= 1
		}
	}
	return v
}
