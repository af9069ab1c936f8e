package sfu

import (
	"math"
	"sync/atomic"
	"time"
)

// rateMeter turns byte and frame counters into bitrate and frame rate. update is called by the
// hub's ticker only; the figures are read from anywhere.
type rateMeter struct {
	lastBytes, lastFrames uint64
	lastAt                time.Time
	bitrate               atomic.Uint64 // float64 bits, bits per second
	fps                   atomic.Uint64 // float64 bits
}

func (m *rateMeter) update(now time.Time, bytes, frames uint64) {
	if !m.lastAt.IsZero() {
		if dt := now.Sub(m.lastAt).Seconds(); dt > 0 {
			m.bitrate.Store(math.Float64bits(float64(bytes-m.lastBytes) * 8 / dt))
			m.fps.Store(math.Float64bits(float64(frames-m.lastFrames) / dt))
		}
	}
	m.lastBytes, m.lastFrames, m.lastAt = bytes, frames, now
}

// Bitrate returns the last measured rate in bits per second.
func (m *rateMeter) Bitrate() float64 { return math.Float64frombits(m.bitrate.Load()) }

// FPS returns the last measured frame rate.
func (m *rateMeter) FPS() float64 { return math.Float64frombits(m.fps.Load()) }
