package media

import (
	"math/rand/v2"
	"testing"
)

// TestReadBits compares readBits with reading bit by bit, at every offset and width, past the
// end of the buffer too (missing bits read as 0).
func TestReadBits(t *testing.T) {
	slow := func(b []byte, pos, n int) uint32 {
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
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 9)
	for range 20 {
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		for pos := 0; pos <= 8*len(b); pos++ {
			for n := 0; n <= 32; n++ {
				if got, want := readBits(b, pos, n), slow(b, pos, n); got != want {
					t.Fatalf("readBits(%x, %d, %d) = %#x, want %#x", b, pos, n, got, want)
				}
			}
		}
	}
}
