package recorder

import (
	"time"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
)

// ticksToNs converts a tick count of a clock to nanoseconds without overflow.
func ticksToNs(ticks int64, clock uint32) int64 {
	c := int64(clock)
	return ticks/c*int64(time.Second) + ticks%c*int64(time.Second)/c
}

// nsToTicks converts nanoseconds to ticks of a clock, rounded to the nearest tick.
func nsToTicks(ns int64, clock uint32) int64 {
	c := int64(clock)
	sec, rem := ns/int64(time.Second), ns%int64(time.Second)
	r := rem * c
	if r >= 0 {
		r += int64(time.Second) / 2
	} else {
		r -= int64(time.Second) / 2
	}
	return sec*c + r/int64(time.Second)
}

// preFrame is a frame buffered while the capture waits to open a file.
type preFrame struct {
	pts, dts int64 // extended RTP ticks
	key      bool
	dur      int64
	off, n   int
}

// trackState is one subscribed track of a capture: its RTP state, its clock mapping, the frames
// waiting for a file and its track in the open file. Owned by the capture goroutine.
type trackState struct {
	track *sfu.Track
	sub   *sfu.Subscription
	codec sfu.Codec
	kind  sfu.Kind
	clock uint32
	dep   media.Reader
	onFr  func(*media.Frame) // bound once: no allocation per packet

	ts media.Sequence

	// The clock mapping: wall(ext) = anchorNs + ticksToNs(ext - anchorExt). Before a file opens
	// it follows the earliest arrival (the packet with the least delay); it is frozen while the
	// track is in a file so that timestamps never jump.
	anchorSet bool
	anchorExt int64
	anchorNs  int64
	frozen    bool

	pre     []preFrame
	preData []byte

	ft      *fileTrack // the track in the open file, nil when not in it
	off     int64      // ext + off = ticks in the file
	minDTS  int64      // frames before this (file ticks) belong to the previous file
	cfg     media.Params
	removed bool
	skip    bool // the codec cannot be recorded
}

// observe updates the clock mapping with a packet that arrived at arrivalNs.
func (t *trackState) observe(ext, arrivalNs int64) {
	if t.frozen {
		return
	}
	if !t.anchorSet {
		t.anchorSet, t.anchorExt, t.anchorNs = true, ext, arrivalNs
		return
	}
	if c := arrivalNs - ticksToNs(ext-t.anchorExt, t.clock); c < t.anchorNs {
		t.anchorNs = c
	}
}

// useSenderReport anchors the clock on the publisher's RTCP sender report, when there is one.
func (t *trackState) useSenderReport() bool {
	sr, ok := t.track.SenderReport()
	if !ok || !t.ts.Started() || sr.NTPTime.IsZero() {
		return false
	}
	t.anchorExt = t.ts.At(sr.RTPTime)
	t.anchorNs = sr.NTPTime.UnixNano()
	t.anchorSet = true
	return true
}

// wall returns the wall-clock time of an extended timestamp, in Unix nanoseconds.
func (t *trackState) wall(ext int64) int64 {
	return t.anchorNs + ticksToNs(ext-t.anchorExt, t.clock)
}

// buffer keeps a frame until a file opens. Video keeps only from its latest keyframe, and the
// buffer is bounded: past the bound it starts again at the next keyframe.
func (t *trackState) buffer(f *media.Frame) {
	if t.kind == sfu.KindVideo && f.Key {
		t.pre, t.preData = t.pre[:0], t.preData[:0]
	}
	if len(t.preData)+len(f.Data) > maxPreBytes || len(t.pre) >= maxPreFrames {
		t.pre, t.preData = t.pre[:0], t.preData[:0]
		if t.kind == sfu.KindVideo && !f.Key {
			return
		}
	}
	t.pre = append(t.pre, preFrame{pts: f.PTS, dts: f.DTS, key: f.Key, dur: f.Dur, off: len(t.preData), n: len(f.Data)})
	t.preData = append(t.preData, f.Data...)
}

// dropPreBefore drops buffered frames that end before wallNs.
func (t *trackState) dropPreBefore(wallNs int64) {
	i := 0
	for i < len(t.pre) && t.wall(t.pre[i].pts) < wallNs {
		i++
	}
	if i == 0 {
		return
	}
	if i == len(t.pre) {
		t.pre, t.preData = t.pre[:0], t.preData[:0]
		return
	}
	cut := t.pre[i].off
	copy(t.preData, t.preData[cut:])
	t.preData = t.preData[:len(t.preData)-cut]
	n := copy(t.pre, t.pre[i:])
	t.pre = t.pre[:n]
	for j := range t.pre {
		t.pre[j].off -= cut
	}
}

// lastKeyframe returns the index of the latest buffered keyframe, or -1.
func (t *trackState) lastKeyframe() int {
	for i := len(t.pre) - 1; i >= 0; i-- {
		if t.pre[i].key {
			return i
		}
	}
	return -1
}

// Bounds of the frames buffered per track while a capture waits to open a file.
const (
	maxPreBytes  = 32 << 20
	maxPreFrames = 4096
)
