package transcode

import "testing"

func TestTimelineRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name             string
		srcRate, outRate uint32
		base             uint32
		step             uint32
	}{
		{"aac 44.1k to opus", 44100, 48000, 4000000000, 1024},
		{"opus to aac 48k", 48000, 48000, 123, 960},
		{"vp8 to h264", 90000, 90000, 4294960000, 3000}, // wraps after a few frames
	} {
		t.Run(tc.name, func(t *testing.T) {
			tl := newTimeline(tc.srcRate, tc.outRate)
			for i := range uint32(100) {
				ts := tc.base + i*tc.step
				pts := tl.in(ts)
				want := tsOrigin + int64(i)*int64(tc.step)*90000/int64(tc.srcRate)
				if pts != want {
					t.Fatalf("in(%d) = %d, want %d", ts, pts, want)
				}
				// ffmpeg returns the 33-bit time; the same instant maps back to the source
				// timestamp scaled to the output rate.
				got := tl.out(tl.unwrap(pts & ptsMask))
				exp := tl.outOfSource(ts)
				if d := int64(int32(got - exp)); d < -1 || d > 1 {
					t.Fatalf("out(in(%d)) = %d, want %d", ts, got, exp)
				}
			}
			// An output 30 ms before the first input (encoder priming) maps before the base.
			first := tl.outOfSource(tc.base)
			early := tl.out(tsOrigin - 2700)
			if d := int64(int32(first - early)); d != int64(tc.outRate)*30/1000 {
				t.Fatalf("30 ms early maps %d ticks early", d)
			}
		})
	}
}

// The 33-bit presentation time wraps after 26.5 hours; outputs near the input still map.
func TestTimelineUnwrap(t *testing.T) {
	tl := newTimeline(90000, 90000)
	tl.in(0)
	tl.lastIn.Store(ptsMask + 500) // just past a wrap
	if got := tl.unwrap(400); got != ptsMask+1+400 {
		t.Fatalf("unwrap after wrap = %d", got)
	}
	if got := tl.unwrap(ptsMask - 100); got != ptsMask-100 {
		t.Fatalf("unwrap before wrap = %d", got)
	}
}

func TestFloorDiv(t *testing.T) {
	for _, c := range [][3]int64{{7, 2, 3}, {-7, 2, -4}, {-8, 2, -4}, {0, 5, 0}, {-1, 90000, -1}} {
		if got := floorDiv(c[0], c[1]); got != c[2] {
			t.Errorf("floorDiv(%d, %d) = %d, want %d", c[0], c[1], got, c[2])
		}
	}
}
