package media

import (
	"testing"
	"time"
)

func TestRebaser(t *testing.T) {
	const frame = 3600 // 40 ms at 90 kHz
	for _, tc := range []struct {
		name  string
		start uint32
		// each step: the source's timestamp step (ticks) and the arrival step
		steps []int64
		at    []time.Duration
		want  []int64 // the output's steps
		jumps int
	}{
		{"steady", 0, []int64{frame, frame, 0, frame}, []time.Duration{40, 40, 1, 39}, []int64{frame, frame, 0, frame}, 0},
		{"wraps around 2^32", 1<<32 - frame, []int64{frame, frame, frame}, []time.Duration{40, 40, 40}, []int64{frame, frame, frame}, 0},
		{"reordered", 0, []int64{2 * frame, -frame, 2 * frame}, []time.Duration{40, 1, 40}, []int64{2 * frame, -frame, 2 * frame}, 0},
		{"paused source", 0, []int64{frame, 30 * 90000, frame}, []time.Duration{40, 30000, 40}, []int64{frame, 30 * 90000, frame}, 0},
		{"burst after a stall", 0, []int64{frame, frame, frame}, []time.Duration{40, 6000, 0}, []int64{frame, frame, frame}, 0},
		{"6 h forward", 0, []int64{frame, 6*3600*90000 + frame, frame}, []time.Duration{40, 40, 40}, []int64{frame, frame, frame}, 1},
		{"jump with jittery arrival", 0, []int64{frame, 6*3600*90000 + frame, frame}, []time.Duration{40, 12, 68}, []int64{frame, frame, frame}, 1},
		{"jump after a pause", 0, []int64{frame, 6*3600*90000 + frame, frame}, []time.Duration{40, 20000, 40}, []int64{frame, 20000 * 90, frame}, 1},
		{"10 min back", 0, []int64{frame, -600*90000 + frame, frame}, []time.Duration{40, 40, 40}, []int64{frame, frame, frame}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRebaser(90000)
			now := time.Unix(1000, 0)
			in := tc.start
			prev, _ := r.Rebase(in, now)
			jumps := 0
			for i, s := range tc.steps {
				in += uint32(s)
				now = now.Add(tc.at[i] * time.Millisecond)
				out, jump := r.Rebase(in, now)
				if jump != 0 {
					jumps++
				}
				if got := int64(int32(out - prev)); got != tc.want[i] {
					t.Errorf("step %d: out moved %d, want %d", i, got, tc.want[i])
				}
				prev = out
			}
			if jumps != tc.jumps {
				t.Errorf("%d jumps, want %d", jumps, tc.jumps)
			}
		})
	}
}
