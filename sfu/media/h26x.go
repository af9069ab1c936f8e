package media

import (
	"bytes"
	"encoding/binary"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"

	"github.com/sluice-media/sluice/sfu"
)

// maxReorder bounds the frames held to derive decode times.
const maxReorder = 16

// h264Reorder returns how many frames may precede a frame in decode order while following it
// in presentation order (H.264 Annex E: num_reorder_frames), 0 for the Baseline profile, and
// the reference frame count when the stream does not say.
func h264Reorder(sps *h264.SPS) int {
	switch {
	case sps.VUI != nil && sps.VUI.BitstreamRestriction != nil:
		return min(int(sps.VUI.BitstreamRestriction.MaxNumReorderFrames), maxReorder)
	case sps.ProfileIdc == 66: // Baseline: no B-frames
		return 0
	}
	return min(int(sps.MaxNumRefFrames), maxReorder)
}

// h265Reorder returns sps_max_num_reorder_pics of the highest sub-layer (H.265 §7.4.3.2.1).
func h265Reorder(sps *h265.SPS) int {
	if n := len(sps.MaxNumReorderPics); n > 0 {
		return min(int(sps.MaxNumReorderPics[n-1]), maxReorder)
	}
	return maxReorder
}

// heldAU is an access unit waiting for its decode time.
type heldAU struct {
	pts int64
	key bool
	buf []byte
}

// h26xReader reassembles H.264/H.265 access units (AVCC) and gives them exact decode times.
//
// RTP timestamps are presentation times; frames arrive in decode order. The decode time of the
// k-th frame is the k-th smallest presentation time minus a constant delay D: the decode times
// then advance by exactly the frame spacing, never pass the presentation times, and the
// composition offsets are the encoder's own (D is the reorder depth times the frame interval, as
// encoders and ffmpeg set it). The k-th smallest presentation time is known once the reorder
// depth R (from the SPS) more frames have arrived, so R frames are held: the depacketizer's
// buffers themselves, swapped for reused ones, so that an access unit is never copied. When the
// packets carry the decode time (sfu.Packet.HasDTS: an RTMP source), it is taken as it is and
// nothing is held. Zero allocations per packet after warm-up.
type h26xReader struct {
	learnedParams
	d       *naluDepacketizer
	h265    bool
	bad     bool // the last push saw a malformed or broken access unit
	waitKey bool // drop until a keyframe (after a loss)
	ext     int64
	emit    func(*Frame)
	onAU    func(*accessUnit)
	f       Frame
	views   [][]byte // the NAL units of the frame handed out

	reorder int
	delay   int64 // D in ticks, -1 until measured
	fifo    []heldAU
	pts     []int64 // min-heap of the held presentation times
	free    [][]byte
	lastDTS int64
	haveDTS bool

	// The decode-time offsets the packets carry (sfu.Packet.DTSOffset) for the access unit being
	// assembled and for the one before it, which completes on a timestamp change.
	cur, prev carried
}

// carried is the decode-time offset of the packets of one timestamp.
type carried struct {
	ts     uint32
	off    int32
	ok     bool // the packets carry one
	filled bool
}

func newH26xReader(c sfu.Codec) *h26xReader {
	h265 := c.Name == sfu.CodecH265
	h := &h26xReader{d: newNALUDepacketizer(h265), h265: h265, delay: -1, reorder: maxReorder, waitKey: true}
	h.onAU = h.accessUnit
	if h265 {
		vps, sps, pps := H265Sprop(c.Fmtp)
		h.learn([][]byte{vps, sps, pps})
	} else {
		sps, pps := H264Sprop(c.Fmtp)
		h.learn([][]byte{sps, pps})
	}
	return h
}

func (h *h26xReader) Push(p *sfu.Packet, ext int64, lost bool, emit func(*Frame)) bool {
	h.bad = false
	h.ext, h.emit = ext, emit
	if ts := p.Header.Timestamp; !h.cur.filled || ts != h.cur.ts {
		h.prev, h.cur = h.cur, carried{ts: ts, off: p.DTSOffset, ok: p.HasDTS, filled: true}
	}
	h.d.push(p.Payload, p.Header.Timestamp, p.Header.Marker, lost, h.onAU)
	return !h.bad
}

// Flush hands out the held frames (the source ended).
func (h *h26xReader) Flush(emit func(*Frame)) {
	h.emit = emit
	h.drain(0)
}

func (h *h26xReader) accessUnit(au *accessUnit) {
	if au.broken {
		h.bad, h.waitKey = true, true
		h.drain(0) // what came before the loss is whole
		return
	}
	if h.waitKey && !au.keyframe {
		return
	}
	h.waitKey = false
	// Access units may complete on the next packet's timestamp change: rebase to the AU's own.
	pts := h.ext + int64(int32(au.ts-uint32(h.ext)))
	if au.keyframe {
		h.learn(au.nalus) // may change the reorder depth (after draining)
	}
	c := h.cur
	if c.ts != au.ts {
		c = h.prev
	}
	if c.ok && c.ts == au.ts { // the producer knew the decode time: nothing to hold
		h.drain(0)
		h.out(pts, pts-int64(c.off), au.keyframe, au.avcc, au.nalus)
		return
	}
	if h.reorder == 0 && len(h.fifo) == 0 { // no B-frames: the decode time is the presentation time
		h.out(pts, pts, au.keyframe, au.avcc, au.nalus)
		return
	}
	// Hold the depacketizer's buffer itself, and give it a free one (the largest, so that it
	// rarely grows) for the next access unit: nothing is copied.
	var next []byte
	if n := len(h.free); n > 0 {
		i := n - 1
		for j, b := range h.free {
			if cap(b) > cap(h.free[i]) {
				i = j
			}
		}
		next = h.free[i][:0]
		h.free[i] = h.free[n-1]
		h.free = h.free[:n-1]
	}
	h.fifo = append(h.fifo, heldAU{pts: pts, key: au.keyframe, buf: h.d.swap(next)})
	h.push(pts)
	if h.delay < 0 && len(h.pts) > h.reorder {
		h.delay = int64(h.reorder) * h.minInterval()
	}
	h.drain(h.reorder)
}

// learn keeps the parameter sets of a keyframe (copied only when they change).
func (h *h26xReader) learn(nalus [][]byte) {
	for _, n := range nalus {
		if len(n) == 0 {
			continue
		}
		var dst *[]byte
		if h.h265 {
			switch (n[0] >> 1) & 0x3f {
			case 32:
				dst = &h.params.VPS
			case 33:
				dst = &h.params.SPS
			case 34:
				dst = &h.params.PPS
			}
		} else {
			switch n[0] & 0x1f {
			case naluSPS:
				dst = &h.params.SPS
			case naluPPS:
				dst = &h.params.PPS
			}
		}
		if dst == nil || bytes.Equal(*dst, n) {
			continue
		}
		*dst = append([]byte(nil), n...)
		h.changed = true
		if dst != &h.params.SPS {
			continue
		}
		if h.h265 {
			var sps h265.SPS
			if sps.Unmarshal(n) == nil {
				h.params.Width, h.params.Height = sps.Width(), sps.Height()
				h.setReorder(h265Reorder(&sps))
			}
		} else {
			var sps h264.SPS
			if sps.Unmarshal(n) == nil {
				h.params.Width, h.params.Height = sps.Width(), sps.Height()
				h.setReorder(h264Reorder(&sps))
			}
		}
	}
}

// setReorder changes the reorder depth: the frames held under the old one go out first.
func (h *h26xReader) setReorder(r int) {
	if r == h.reorder {
		return
	}
	h.drain(0)
	h.reorder, h.delay = r, -1
}

// drain emits held frames until at most keep remain.
func (h *h26xReader) drain(keep int) {
	for len(h.fifo) > keep {
		if h.delay < 0 {
			h.delay = int64(min(h.reorder, len(h.pts)-1)) * h.minInterval()
		}
		f := h.fifo[0]
		copy(h.fifo, h.fifo[1:])
		h.fifo = h.fifo[:len(h.fifo)-1]
		h.out(f.pts, h.pop()-h.delay, f.key, f.buf, h.nalus(f.buf))
		h.free = append(h.free, f.buf)
	}
}

// out emits one frame, its decode time kept increasing.
func (h *h26xReader) out(pts, dts int64, key bool, avcc []byte, nalus [][]byte) {
	if h.haveDTS && dts <= h.lastDTS {
		dts = h.lastDTS + 1 // a deeper reorder than announced: keep decode order
	}
	h.lastDTS, h.haveDTS = dts, true
	h.f = Frame{PTS: pts, DTS: dts, Key: key, Data: avcc, NALUs: nalus}
	h.emit(&h.f)
}

// nalus returns the views of the NAL units of an AVCC access unit (well-formed: we built it).
func (h *h26xReader) nalus(avcc []byte) [][]byte {
	h.views = h.views[:0]
	for len(avcc) >= 4 {
		n := int(binary.BigEndian.Uint32(avcc))
		h.views = append(h.views, avcc[4:4+n])
		avcc = avcc[4+n:]
	}
	return h.views
}

// minInterval is the smallest gap between the held presentation times (the frame interval).
func (h *h26xReader) minInterval() int64 {
	best := int64(0)
	for i, a := range h.pts {
		for _, b := range h.pts[i+1:] {
			if d := a - b; d != 0 {
				if d < 0 {
					d = -d
				}
				if best == 0 || d < best {
					best = d
				}
			}
		}
	}
	return best
}

// push adds a presentation time to the min-heap.
func (h *h26xReader) push(v int64) {
	h.pts = append(h.pts, v)
	for i := len(h.pts) - 1; i > 0; {
		p := (i - 1) / 2
		if h.pts[p] <= h.pts[i] {
			break
		}
		h.pts[p], h.pts[i] = h.pts[i], h.pts[p]
		i = p
	}
}

// pop removes the smallest presentation time.
func (h *h26xReader) pop() int64 {
	top := h.pts[0]
	last := len(h.pts) - 1
	h.pts[0] = h.pts[last]
	h.pts = h.pts[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(h.pts) && h.pts[l] < h.pts[m] {
			m = l
		}
		if r < len(h.pts) && h.pts[r] < h.pts[m] {
			m = r
		}
		if m == i {
			break
		}
		h.pts[i], h.pts[m] = h.pts[m], h.pts[i]
		i = m
	}
	return top
}
