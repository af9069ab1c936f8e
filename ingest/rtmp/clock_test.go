package rtmp

import "testing"

func TestSessionClock(t *testing.T) {
	cases := []struct {
		name string
		in   []uint32
		want []int64
	}{
		{"rebased to the first timestamp", []uint32{5000, 5033, 5066}, []int64{0, 33, 66}},
		{"audio and video interleave out of order", []uint32{1000, 990, 1021, 1010}, []int64{0, -10, 21, 10}},
		{"32-bit wrap", []uint32{0xffffffe0, 0xfffffff0, 0x10}, []int64{0, 16, 48}},
		{"encoder restart rewinds: re-anchored", []uint32{90000, 90033, 0, 33}, []int64{0, 33, 34, 67}},
		{"jump forward: re-anchored", []uint32{100, 133, 900000, 900033}, []int64{0, 33, 34, 67}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var clk sessionClock
			for i, ts := range c.in {
				if got := clk.at(ts); got != c.want[i] {
					t.Fatalf("at(%d) = %d, want %d (step %d)", ts, got, c.want[i], i)
				}
			}
		})
	}
}

func TestAudioClockIsSampleExact(t *testing.T) {
	a := newAudioClock(48000, 1024)
	// AAC frames at 48 kHz are 21.333 ms: FLV timestamps alternate 21 and 22 ms steps.
	for i := range 300 {
		ms := int64(float64(i) * 1024 * 1000 / 48000) // what a muxer rounds down to
		if got := a.at(ms); got != int64(i)*1024 {
			t.Fatalf("frame %d at %d ms: ts %d, want %d", i, ms, got, i*1024)
		}
	}
	// A gap (a lost second) restarts from the clock.
	if got := a.at(300*1024*1000/48000 + 1000); got != (300*1024*1000/48000+1000)*48 {
		t.Fatalf("after a gap: %d", got)
	}
}
