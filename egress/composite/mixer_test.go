package composite

import (
	"math"
	"testing"
)

// A source that arrives in 170 ms bursts (an RTSP camera packing AAC) plays without a gap once
// its buffer has grown to the bursts; a steady one keeps the short buffer.
func TestPCMSourceAdaptsToBursts(t *testing.T) {
	burst := make([]byte, 2*sampleRate*170/1000)
	for i := 0; i < len(burst); i += 2 {
		burst[i], burst[i+1] = 0x00, 0x10 // 4096
	}
	var s pcmSource
	out := make([]float64, blockFrames)
	var late, silent int
	written, read := 0, 0        // in samples: the source's clock and the mixer's
	for block := range 50 * 60 { // a minute of 20 ms blocks
		for written <= read { // the source delivers a burst when its clock comes due
			s.write(burst)
			written += len(burst) / 2
		}
		s.read(out)
		read += blockFrames
		if out[0] == 0 || out[len(out)-1] == 0 {
			if block > 50*10 { // after 10 s
				late++
			}
			silent++
		}
	}
	if late != 0 {
		t.Errorf("%d silent blocks after 10 s of 170 ms bursts (%d in all; prime %d ms)", late, silent, s.prime*1000/sampleRate)
	}
	if s.prime <= primeFrames || s.prime > maxPrimeFrames {
		t.Errorf("prime %d samples, want between %d and %d", s.prime, primeFrames, maxPrimeFrames)
	}

	var steady pcmSource
	block := make([]byte, 2*blockFrames)
	for i := range 50 * 10 {
		steady.write(block)
		if i > 3 {
			steady.read(out)
		}
	}
	if steady.prime != primeFrames || steady.underruns != 0 {
		t.Errorf("a steady source: prime %d, %d underruns", steady.prime, steady.underruns)
	}
}

// The mix of two equal tones at different levels brings both to about the same power, and
// never clips.
func TestMixerNormalisesAndLimits(t *testing.T) {
	srcs := map[string]*pcmSource{"loud": {}, "soft": {}}
	tone := func(freq, amp float64, n, at int) []byte {
		b := make([]byte, 2*n)
		for i := range n {
			v := int16(amp * math.Sin(2*math.Pi*freq*float64(at+i)/sampleRate))
			b[2*i], b[2*i+1] = byte(v), byte(uint16(v)>>8)
		}
		return b
	}
	var m mixer
	var mono []int16
	for i := range 50 * 8 {
		srcs["loud"].write(tone(440, 30000, blockFrames, i*blockFrames))
		srcs["soft"].write(tone(660, 1500, blockFrames, i*blockFrames))
		out, _ := m.mix(srcs)
		if i >= 50*6 {
			for j := 0; j < len(out); j += 4 {
				mono = append(mono, int16(uint16(out[j])|uint16(out[j+1])<<8))
			}
		}
	}
	peak := 0
	for _, v := range mono {
		peak = max(peak, int(v), -int(v))
	}
	if peak >= 32767 {
		t.Errorf("the mix clips (peak %d)", peak)
	}
	l, s := goertzel(mono, 440), goertzel(mono, 660)
	if r := l / s; r > 2 || r < 0.5 {
		t.Errorf("a tone 26 dB softer is %.1f times weaker in the mix, want about as strong", r)
	}
	if _, sp := m.mix(srcs); sp != "loud" {
		t.Errorf("speaker %q, want the loud one", sp)
	}
}
