package composite

import (
	"image"
	"image/draw"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Colours of the canvas in Y, Cb, Cr.
var (
	background = [3]byte{16, 128, 128} // black
	tileColour = [3]byte{40, 128, 128} // the tile of a participant without a picture
	labelBack  = [3]byte{16, 128, 128}
)

// frame is one I420 picture: the Y plane, then Cb and Cr at half size.
type frame struct {
	w, h int
	buf  []byte
}

func newFrame(w, h int) *frame {
	return &frame{w: w, h: h, buf: make([]byte, w*h*3/2)}
}

func (f *frame) planes() (y, cb, cr []byte) {
	n := f.w * f.h
	return f.buf[:n], f.buf[n : n+n/4], f.buf[n+n/4:]
}

// fill paints r in colour c.
func (f *frame) fill(r rect, c [3]byte) {
	y, cb, cr := f.planes()
	for row := r.y; row < r.y+r.h; row++ {
		fillRow(y[row*f.w+r.x:row*f.w+r.x+r.w], c[0])
	}
	cw := f.w / 2
	for row := r.y / 2; row < (r.y+r.h)/2; row++ {
		fillRow(cb[row*cw+r.x/2:row*cw+(r.x+r.w)/2], c[1])
		fillRow(cr[row*cw+r.x/2:row*cw+(r.x+r.w)/2], c[2])
	}
}

func fillRow(b []byte, v byte) {
	if len(b) == 0 {
		return
	}
	b[0] = v
	for filled := 1; filled < len(b); filled *= 2 {
		copy(b[filled:], b[:filled])
	}
}

// scaler draws a source picture of one size into one tile, nearest neighbour, keeping the
// source's aspect ratio (bars in the tile colour around it). Its maps are computed once per
// size pair, so drawing allocates nothing.
type scaler struct {
	sw, sh int
	dst    rect // the tile
	in     rect // where the picture goes inside it
	xs, ys []int
	cxs    []int
	cys    []int
}

func newScaler(sw, sh int, dst rect) *scaler {
	s := &scaler{sw: sw, sh: sh, dst: dst}
	// Fit: the largest even-sized rectangle of the source's aspect inside dst.
	w, h := dst.w, dst.w*sh/sw
	if h > dst.h {
		w, h = dst.h*sw/sh, dst.h
	}
	w, h = even(max(w, 2)), even(max(h, 2))
	s.in = rect{dst.x + even((dst.w-w)/2), dst.y + even((dst.h-h)/2), w, h}
	s.xs, s.ys = make([]int, w), make([]int, h)
	for i := range s.xs {
		s.xs[i] = i * sw / w
	}
	for i := range s.ys {
		s.ys[i] = i * sh / h
	}
	s.cxs, s.cys = make([]int, w/2), make([]int, h/2)
	for i := range s.cxs {
		s.cxs[i] = i * (sw / 2) / (w / 2)
	}
	for i := range s.cys {
		s.cys[i] = i * (sh / 2) / (h / 2)
	}
	return s
}

// draw paints src into the tile (the bars first).
func (s *scaler) draw(dst, src *frame) {
	if s.in != s.dst {
		dst.fill(s.dst, tileColour)
	}
	dy, dcb, dcr := dst.planes()
	sy, scb, scr := src.planes()
	if s.in.w == s.sw && s.in.h == s.sh { // same size: rows as they are
		for j := range s.sh {
			copy(dy[(s.in.y+j)*dst.w+s.in.x:(s.in.y+j)*dst.w+s.in.x+s.sw], sy[j*src.w:j*src.w+s.sw])
		}
		cw, scw := dst.w/2, src.w/2
		for j := range s.sh / 2 {
			off := (s.in.y/2+j)*cw + s.in.x/2
			copy(dcb[off:off+scw], scb[j*scw:(j+1)*scw])
			copy(dcr[off:off+scw], scr[j*scw:(j+1)*scw])
		}
		return
	}
	for j, sj := range s.ys {
		row := dy[(s.in.y+j)*dst.w+s.in.x:]
		srow := sy[sj*src.w:]
		for i, si := range s.xs {
			row[i] = srow[si]
		}
	}
	cw, scw := dst.w/2, src.w/2
	for j, sj := range s.cys {
		off := (s.in.y/2+j)*cw + s.in.x/2
		rb, rr := dcb[off:], dcr[off:]
		sb, sr := scb[sj*scw:], scr[sj*scw:]
		for i, si := range s.cxs {
			rb[i], rr[i] = sb[si], sr[si]
		}
	}
}

// label is a participant's name rendered once as a luma mask.
type label struct {
	text string
	mask *image.Gray
}

func newLabel(text string) *label {
	const maxRunes = 40
	if r := []rune(text); len(r) > maxRunes {
		text = string(r[:maxRunes-1]) + "…"
	}
	face := basicfont.Face7x13
	w := font.MeasureString(face, text).Ceil() + 8
	img := image.NewGray(image.Rect(0, 0, even(w+1), 18))
	draw.Draw(img, img.Bounds(), image.Black, image.Point{}, draw.Src)
	d := font.Drawer{Dst: img, Src: image.White, Face: face, Dot: fixed.P(4, 13)}
	d.DrawString(text)
	return &label{text: text, mask: img}
}

// stamp draws the label at the bottom left of r, clipped to it.
func (l *label) stamp(dst *frame, r rect) {
	b := l.mask.Bounds()
	w, h := min(b.Dx(), r.w), min(b.Dy(), r.h)
	x0, y0 := r.x, even(r.y+r.h-h)
	dst.fill(rect{x0, y0, even(w), even(h)}, labelBack)
	y, _, _ := dst.planes()
	for j := range h {
		row := y[(y0+j)*dst.w+x0:]
		for i := range w {
			if v := l.mask.Pix[j*l.mask.Stride+i]; v > 0 {
				row[i] = 16 + byte(int(v)*219/255)
			}
		}
	}
}
