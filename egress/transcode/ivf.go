package transcode

import (
	"encoding/binary"
	"io"
)

// ivfWriter writes VP8 and VP9 frames as an IVF stream (the container of libvpx's tools, which
// ffmpeg reads from a pipe): a 32-byte header, then each frame behind a 12-byte header with its
// size and 64-bit presentation time, here in 1/90000 s. MPEG-TS cannot carry VP8 or VP9.
type ivfWriter struct {
	w      io.Writer
	fourcc string
	header bool
	buf    [32]byte
}

func newIVFWriter(w io.Writer, fourcc string) *ivfWriter {
	return &ivfWriter{w: w, fourcc: fourcc}
}

// writeFrame writes one frame; the stream header goes first, with the frame size when the first
// frame is a VP8 keyframe (ffmpeg takes the real size from the bitstream anyway).
func (iw *ivfWriter) writeFrame(pts int64, frame []byte) error {
	if !iw.header {
		h := iw.buf[:32]
		clear(h)
		copy(h[0:4], "DKIF")
		binary.LittleEndian.PutUint16(h[4:], 0)  // version
		binary.LittleEndian.PutUint16(h[6:], 32) // header size
		copy(h[8:12], iw.fourcc)
		w, ht := vp8Size(frame)
		binary.LittleEndian.PutUint16(h[12:], w)
		binary.LittleEndian.PutUint16(h[14:], ht)
		binary.LittleEndian.PutUint32(h[16:], 90000) // time base denominator
		binary.LittleEndian.PutUint32(h[20:], 1)     // time base numerator
		if _, err := iw.w.Write(h); err != nil {
			return err
		}
		iw.header = true
	}
	fh := iw.buf[:12]
	binary.LittleEndian.PutUint32(fh, uint32(len(frame)))
	binary.LittleEndian.PutUint64(fh[4:], uint64(pts))
	if _, err := iw.w.Write(fh); err != nil {
		return err
	}
	_, err := iw.w.Write(frame)
	return err
}

// vp8Size reads the size of a VP8 keyframe (RFC 6386 §9.1: a 3-byte frame tag, the start code
// 9d 01 2a, then 14-bit width and height), or 0, 0.
func vp8Size(f []byte) (width, height uint16) {
	if len(f) < 10 || f[0]&1 != 0 || f[3] != 0x9d || f[4] != 0x01 || f[5] != 0x2a {
		return 0, 0
	}
	return binary.LittleEndian.Uint16(f[6:]) & 0x3fff, binary.LittleEndian.Uint16(f[8:]) & 0x3fff
}
