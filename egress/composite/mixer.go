package composite

import (
	"math"
	"sync"
	"time"
)

// Audio of the composite: 48 kHz, 20 ms blocks; sources are mono, the output is stereo.
const (
	sampleRate  = 48000
	blockFrames = sampleRate / 50
	// ringFrames bounds what a source may have waiting.
	ringFrames = sampleRate
	// primeFrames is what a source buffers before it is first heard (absorbs jitter); each
	// underrun doubles it, up to maxPrimeFrames, for sources that arrive in bursts (an RTSP
	// camera packing 170 ms of AAC in one packet).
	primeFrames    = sampleRate * 60 / 1000
	maxPrimeFrames = sampleRate * 480 / 1000
	// slackFrames is how far past its prime a source may fill before the excess is dropped
	// (bounding its delay).
	slackFrames = sampleRate / 5
	// speechDB is the level above which a source counts as speaking.
	speechDB = -50.0
	// targetRMS is the level every speaking source is brought toward.
	targetRMS = 0.1 * 32768
)

// pcmSource is one participant's decoded audio: written by its decoder, read by the mixer.
// Safe for concurrent use.
type pcmSource struct {
	mu     sync.Mutex
	ring   [ringFrames]int16
	r, n   int  // read position, samples waiting
	prime  int  // what it buffers before playing (0: primeFrames)
	primed bool // enough buffered to start playing
	// underruns and overruns count the times it ran dry and the samples dropped as too late.
	underruns, overruns int
	// Owned by the mixer.
	level float64 // smoothed power, linear
	norm  float64 // the long-term RMS of its speech, for the gain
}

// write adds decoded samples (s16le mono); the oldest are dropped past the ring's bound.
func (s *pcmSource) write(b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.prime == 0 {
		s.prime = primeFrames
	}
	for i := 0; i+1 < len(b); i += 2 {
		v := int16(uint16(b[i]) | uint16(b[i+1])<<8)
		if s.n == ringFrames {
			s.r = (s.r + 1) % ringFrames
			s.n--
			s.overruns++
		}
		s.ring[(s.r+s.n)%ringFrames] = v
		s.n++
	}
	if s.n >= s.prime {
		s.primed = true
	}
	if excess := s.n - (s.prime + slackFrames); excess > 0 { // too far behind: catch up
		s.r = (s.r + excess) % ringFrames
		s.n -= excess
		s.overruns += excess
	}
}

// read fills out with the next samples, silence where the source has none yet (an underrun
// primes it again).
func (s *pcmSource) read(out []float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := 0
	if s.primed {
		for ; i < len(out) && s.n > 0; i++ {
			out[i] = float64(s.ring[s.r])
			s.r = (s.r + 1) % ringFrames
			s.n--
		}
		if i < len(out) {
			s.primed = false
			s.underruns++
			s.prime = min(max(s.prime, primeFrames)*2, maxPrimeFrames)
		}
	}
	for ; i < len(out); i++ {
		out[i] = 0
	}
}

// mixer sums its sources into one stereo block every 20 ms, each brought toward one level, and
// follows the loudest speaker. It is owned by one goroutine.
type mixer struct {
	block   [blockFrames]float64
	sum     [blockFrames]float64
	out     [blockFrames * 4]byte
	limiter float64 // the output gain, recovering slowly after a peak

	speaker      string
	candidate    string
	candidateFor time.Duration
}

// speakerHold is how long another source must be the loudest before it becomes the speaker.
const speakerHold = 600 * time.Millisecond

// mix produces the next 20 ms from sources (by identity) as s16le stereo; the returned slice
// is valid until the next call. It also returns the speaker (possibly "").
func (m *mixer) mix(sources map[string]*pcmSource) ([]byte, string) {
	if m.limiter == 0 {
		m.limiter = 1
	}
	clear(m.sum[:])
	loudest, loudestLevel := "", math.Pow(10, speechDB/10)*32768*32768
	for id, s := range sources {
		s.read(m.block[:])
		var power float64
		for _, v := range m.block {
			power += v * v
		}
		power /= blockFrames
		// Attack fast (one block), release over about 300 ms.
		if power > s.level {
			s.level = power
		} else {
			s.level += (power - s.level) * 0.07
		}
		rms := math.Sqrt(power)
		if 10*math.Log10(power/(32768*32768)+1e-12) > speechDB {
			if s.norm == 0 {
				s.norm = rms
			} else {
				s.norm += (rms - s.norm) * 0.02 // about a second
			}
		}
		gain := 1.0
		if s.norm > 0 {
			gain = min(max(targetRMS/s.norm, 0.1), 8) // within about ±20 dB
		}
		for i, v := range m.block {
			m.sum[i] += v * gain
		}
		if s.level > loudestLevel || (s.level == loudestLevel && id < loudest) {
			loudest, loudestLevel = id, s.level
		}
	}
	m.follow(loudest)
	// Limiter: never clip; recover toward unity over about half a second.
	var peak float64
	for _, v := range m.sum {
		peak = max(peak, math.Abs(v))
	}
	if peak*m.limiter > 32000 {
		m.limiter = 32000 / peak
	} else {
		m.limiter = min(1, m.limiter*1.02)
	}
	for i, v := range m.sum {
		x := int16(max(min(v*m.limiter, 32767), -32768))
		lo, hi := byte(uint16(x)), byte(uint16(x)>>8)
		m.out[4*i], m.out[4*i+1], m.out[4*i+2], m.out[4*i+3] = lo, hi, lo, hi
	}
	return m.out[:], m.speaker
}

// follow moves the speaker to loudest once it has been the loudest for speakerHold; silence
// keeps the last speaker.
func (m *mixer) follow(loudest string) {
	if loudest == "" || loudest == m.speaker {
		m.candidate, m.candidateFor = "", 0
		return
	}
	if loudest != m.candidate {
		m.candidate, m.candidateFor = loudest, 0
	}
	m.candidateFor += 20 * time.Millisecond
	if m.speaker == "" || m.candidateFor >= speakerHold {
		m.speaker, m.candidate, m.candidateFor = loudest, "", 0
	}
}
