package sfu

import "testing"

// A link's level follows its figures with hysteresis: a worse level at its threshold after two
// evaluations, a better one only well under the threshold, and noise around a threshold does
// not flap.
func TestLinkLevelHysteresis(t *testing.T) {
	loss := func(pct float64) linkFigures { return linkFigures{known: true, lossPct: pct} }
	steps := []struct {
		f    linkFigures
		want int
	}{
		{loss(0), QualityExcellent}, // the first figures are taken at once
		{loss(7), QualityExcellent}, // one evaluation is not enough
		{loss(8), QualityBad},
		{loss(5.5), QualityBad}, // under 6 %, not under 0.7 × 6 %
		{loss(6.5), QualityBad},
		{loss(5), QualityBad},
		{loss(0.5), QualityBad},
		{loss(0.2), QualityExcellent},
		{linkFigures{known: true, down: true}, QualityExcellent},
		{linkFigures{known: true, down: true}, QualityDown},
		{linkFigures{}, QualityUnknown}, // gone: at once
	}
	var l linkLevel
	for i, s := range steps {
		l.update(s.f)
		if l.level != s.want {
			t.Fatalf("step %d (%+v): level %d, want %d", i, s.f, l.level, s.want)
		}
	}
}

// A track speaks when enough of its packets in the window are voice; its level is their mean
// amplitude.
func TestAudioLevelWindow(t *testing.T) {
	a := NewAudioLevel()
	for range 25 {
		a.Observe(0x80 | 10) // -10 dBov, voice bit set
	}
	if got := a.take(); got != 32 {
		t.Errorf("-10 dBov: level %d, want 32", got)
	}
	for range speakerSlots {
		for range 25 {
			a.Observe(127)
		}
		a.take()
	}
	if got := a.take(); got != 0 {
		t.Errorf("after a window of silence: level %d, want 0", got)
	}
}
