package recorder

import (
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"
	"time"
)

// repairResult is what recovery learned about a media file.
type repairResult struct {
	size       int64
	durationMs int64
	truncated  bool
	modTime    time.Time
}

// repairFile cuts a media file left by a crash back to its last complete fragment and measures
// it.
func repairFile(path string) (repairResult, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return repairResult{}, err
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return repairResult{}, err
	}
	res := repairResult{modTime: st.ModTime().UTC()}
	var good int64
	switch mediaFormat(path) {
	case "mp4":
		good, res.durationMs, err = scanFMP4(f, st.Size())
	case "mkv":
		good, res.durationMs, err = scanMKV(f, st.Size())
	default:
		return res, errors.New("not a media file")
	}
	if err != nil {
		return res, err
	}
	if good < st.Size() {
		if err := f.Truncate(good); err != nil {
			return res, err
		}
		res.truncated = true
		if err := f.Sync(); err != nil {
			return res, err
		}
	}
	res.size = good
	return res, nil
}

// maxScanBox bounds the boxes and elements recovery reads into memory (a moof, a Cluster).
const maxScanBox = 64 << 20

var errScan = errors.New("malformed media file")

// scanFMP4 walks the top-level boxes of a fragmented MP4 (ISO/IEC 14496-12 §4.2) and returns
// the end of the last complete moof+mdat pair (or of the moov when there is none) and the
// duration up to it, from the moov's timescales and the fragments' tfdt and trun. It never
// panics on malformed input.
func scanFMP4(r io.ReaderAt, size int64) (good, durationMs int64, err error) {
	return walkFMP4(r, size, nil)
}

// walkFMP4 is scanFMP4 that also calls visit for each complete fragment with its byte range
// (moof start to mdat end) and the duration up to its end.
func walkFMP4(r io.ReaderAt, size int64, visit func(off, end, durationMs int64)) (good, durationMs int64, err error) {
	scales := map[uint32]uint32{}
	ends := map[uint32]uint64{}
	var pos int64
	var moof []byte
	var moofAt int64 = -1
	for pos+8 <= size {
		var hdr [16]byte
		if _, err := r.ReadAt(hdr[:8], pos); err != nil {
			break
		}
		boxSize := int64(binary.BigEndian.Uint32(hdr[:4]))
		typ := string(hdr[4:8])
		hlen := int64(8)
		switch boxSize {
		case 1:
			if _, err := r.ReadAt(hdr[8:16], pos+8); err != nil {
				return good, durationMs, nil
			}
			boxSize = int64(binary.BigEndian.Uint64(hdr[8:16]))
			hlen = 16
		case 0:
			boxSize = size - pos
		}
		if boxSize < hlen || pos+boxSize > size || boxSize > math.MaxInt64-pos {
			break // cut off here
		}
		switch typ {
		case "moov":
			if boxSize > maxScanBox {
				return 0, 0, errScan
			}
			buf := make([]byte, boxSize-hlen)
			if _, err := r.ReadAt(buf, pos+hlen); err != nil {
				return 0, 0, err
			}
			parseMoov(buf, scales)
			good = pos + boxSize
		case "moof":
			if boxSize > maxScanBox {
				return good, durationMs, nil
			}
			moof = make([]byte, boxSize-hlen)
			if _, err := r.ReadAt(moof, pos+hlen); err != nil {
				return good, durationMs, nil
			}
			moofAt = pos
		case "mdat":
			if moofAt >= 0 && moof != nil {
				for id, end := range parseMoof(moof) {
					ends[id] = max(ends[id], end)
				}
				good = pos + boxSize
				for id, end := range ends {
					if sc := scales[id]; sc > 0 {
						durationMs = max(durationMs, int64(end*1000/uint64(sc)))
					}
				}
				if visit != nil {
					visit(moofAt, good, durationMs)
				}
			}
			moof, moofAt = nil, -1
		default:
			if good == pos && moof == nil { // ftyp and other boxes before the first fragment
				good = pos + boxSize
			}
		}
		pos += boxSize
	}
	return good, durationMs, nil
}

// boxes calls fn for each box in b (children of a container box).
func boxes(b []byte, fn func(typ string, body []byte)) {
	for len(b) >= 8 {
		n := int(binary.BigEndian.Uint32(b))
		hl := 8
		if n == 1 {
			if len(b) < 16 {
				return
			}
			v := binary.BigEndian.Uint64(b[8:])
			if v > uint64(len(b)) {
				return
			}
			n, hl = int(v), 16
		}
		if n < hl || n > len(b) {
			return
		}
		fn(string(b[4:8]), b[hl:n])
		b = b[n:]
	}
}

// parseMoov collects each track's timescale (trak/tkhd id, trak/mdia/mdhd timescale).
func parseMoov(b []byte, scales map[uint32]uint32) {
	boxes(b, func(typ string, body []byte) {
		if typ != "trak" {
			return
		}
		var id, scale uint32
		boxes(body, func(typ string, body []byte) {
			switch typ {
			case "tkhd":
				if len(body) >= 1 && body[0] == 1 && len(body) >= 24 {
					id = binary.BigEndian.Uint32(body[20:])
				} else if len(body) >= 16 {
					id = binary.BigEndian.Uint32(body[12:])
				}
			case "mdia":
				boxes(body, func(typ string, body []byte) {
					if typ != "mdhd" {
						return
					}
					if len(body) >= 1 && body[0] == 1 && len(body) >= 24 {
						scale = binary.BigEndian.Uint32(body[20:])
					} else if len(body) >= 16 {
						scale = binary.BigEndian.Uint32(body[12:])
					}
				})
			}
		})
		if id != 0 {
			scales[id] = scale
		}
	})
}

// parseMoof returns, per track id, the end time (tfdt base + trun durations) of a fragment.
func parseMoof(b []byte) map[uint32]uint64 {
	out := map[uint32]uint64{}
	boxes(b, func(typ string, body []byte) {
		if typ != "traf" {
			return
		}
		var id uint32
		var base, total uint64
		boxes(body, func(typ string, body []byte) {
			switch typ {
			case "tfhd":
				if len(body) >= 8 {
					id = binary.BigEndian.Uint32(body[4:])
				}
			case "tfdt":
				if len(body) >= 12 && body[0] == 1 {
					base = binary.BigEndian.Uint64(body[4:])
				} else if len(body) >= 8 {
					base = uint64(binary.BigEndian.Uint32(body[4:]))
				}
			case "trun":
				total += sumTrunDurations(body)
			}
		})
		if id != 0 {
			out[id] = max(out[id], base+total)
		}
	})
	return out
}

// sumTrunDurations sums the sample durations of a trun box body.
func sumTrunDurations(b []byte) uint64 {
	if len(b) < 8 {
		return 0
	}
	flags := uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	count := binary.BigEndian.Uint32(b[4:])
	p := 8
	if flags&0x1 != 0 {
		p += 4
	}
	if flags&0x4 != 0 {
		p += 4
	}
	if flags&0x100 == 0 {
		return 0
	}
	per := 4
	for _, f := range []uint32{0x200, 0x400, 0x800} {
		if flags&f != 0 {
			per += 4
		}
	}
	var total uint64
	for i := uint32(0); i < count && p+4 <= len(b); i++ {
		total += uint64(binary.BigEndian.Uint32(b[p:]))
		p += per
	}
	return total
}

// ebmlVint reads an EBML variable-length integer (RFC 8794 §4); mask keeps the length marker
// (element IDs) or not (sizes). unknown reports an all-ones size.
func ebmlVint(b []byte, keepMarker bool) (v uint64, n int, unknown bool, ok bool) {
	if len(b) == 0 || b[0] == 0 {
		return 0, 0, false, false
	}
	n = 1
	for b[0]&(0x80>>(n-1)) == 0 {
		n++
	}
	if n > 8 || len(b) < n {
		return 0, 0, false, false
	}
	v = uint64(b[0])
	if !keepMarker {
		v &= uint64(0xff >> n)
	}
	all := v == uint64(0xff>>n)
	for i := 1; i < n; i++ {
		v = v<<8 | uint64(b[i])
		all = all && b[i] == 0xff
	}
	return v, n, all && !keepMarker, true
}

// scanMKV walks a Matroska file written by mkvWriter: the EBML header, then the Segment's
// children. It returns the end of the last complete top-level child (a Cluster, usually) and
// the time of the last block. It never panics on malformed input.
func scanMKV(r io.ReaderAt, size int64) (good, durationMs int64, err error) {
	var pos int64
	head := make([]byte, 16)
	readHead := func(at int64) (id uint64, hl int, sz uint64, unknown, ok bool) {
		n, _ := r.ReadAt(head, at)
		b := head[:n]
		id, il, _, ok := ebmlVint(b, true)
		if !ok {
			return 0, 0, 0, false, false
		}
		sz, sl, unknown, ok := ebmlVint(b[il:], false)
		return id, il + sl, sz, unknown, ok
	}
	id, hl, sz, _, ok := readHead(0)
	if !ok || id != mkvEBML || sz > maxScanBox {
		return 0, 0, errScan
	}
	pos = int64(hl) + int64(sz)
	id, hl, sz, unknown, ok := readHead(pos)
	if !ok || id != mkvSegment {
		return 0, 0, errScan
	}
	pos += int64(hl)
	end := size
	if !unknown && int64(sz) <= size-pos {
		end = pos + int64(sz)
	}
	good = pos
	for pos < end {
		id, hl, sz, unknown, ok := readHead(pos)
		if !ok || unknown || sz > uint64(end-pos) || pos+int64(hl)+int64(sz) > end {
			break
		}
		next := pos + int64(hl) + int64(sz)
		if id == mkvCluster && sz <= maxScanBox {
			body := make([]byte, sz)
			if _, err := r.ReadAt(body, pos+int64(hl)); err != nil {
				break
			}
			durationMs = max(durationMs, clusterEnd(body))
		}
		good, pos = next, next
	}
	return good, durationMs, nil
}

// clusterEnd returns the latest block time (ms) in a Cluster body.
func clusterEnd(b []byte) int64 {
	var base, last int64
	for len(b) > 0 {
		id, il, _, ok := ebmlVint(b, true)
		if !ok {
			return last
		}
		sz, sl, _, ok := ebmlVint(b[il:], false)
		if !ok || sz > uint64(len(b)-il-sl) {
			return last
		}
		body := b[il+sl : il+sl+int(sz)]
		switch id {
		case mkvTimestamp:
			base = 0
			for _, c := range body {
				base = base<<8 | int64(c)
			}
			last = max(last, base)
		case mkvSimpleBlock:
			_, tn, _, ok := ebmlVint(body, false)
			if ok && len(body) >= tn+2 {
				rel := int64(int16(binary.BigEndian.Uint16(body[tn:])))
				last = max(last, base+rel)
			}
		}
		b = b[il+sl+int(sz):]
	}
	return last
}
