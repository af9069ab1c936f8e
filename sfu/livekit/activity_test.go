package livekit

import (
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// loudest returns the sid of the loudest active speaker a client knows from the SpeakersChanged
// messages it got, as livekit-client keeps them, or "".
func (c *lkClient) loudest() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	active := map[string]float32{}
	for _, m := range c.got {
		for _, sp := range m.GetSpeakersChanged().GetSpeakers() {
			if sp.GetActive() {
				active[sp.GetSid()] = sp.GetLevel()
			} else {
				delete(active, sp.GetSid())
			}
		}
	}
	best, level := "", float32(-1)
	for sid, l := range active {
		if l > level {
			best, level = sid, l
		}
	}
	return best
}

// loudestEvent returns the identity of the first speaker of the latest speakers.changed.
func (e *env) loudestEvent() (string, int) {
	evs := e.events.Events(0)
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Type == sfu.EventSpeakersChanged {
			if len(evs[i].Speakers) == 0 {
				return "", 0
			}
			return evs[i].Speakers[0].Identity, len(evs[i].Speakers)
		}
	}
	return "", 0
}

// Two publishers take turns: one sends a loud level (RFC 6464, -10 dBov) while the other is
// silent (-127). speakers.changed and the SpeakersChanged of a third client follow each turn
// within a second, loudest first; events come at most every 500 ms.
func TestActiveSpeakers(t *testing.T) {
	e := newEnv(t)
	alice := e.connect(t, "alice", true, "1")
	bob := e.connect(t, "bob", true, "1")
	carol := e.connect(t, "carol", false, "1")
	carol.waitMedia(alice, 10)
	carol.waitMedia(bob, 10)

	turns := []*lkClient{alice, bob, alice, bob}
	for i, speaker := range turns {
		for _, c := range []*lkClient{alice, bob} {
			if c == speaker {
				c.level.Store(10)
			} else {
				c.level.Store(127)
			}
		}
		start := time.Now()
		sfutest.WaitFor(t, "turn "+string(rune('1'+i))+": "+speaker.identity+" the loudest in speakers.changed and in carol's SpeakersChanged",
			3*time.Second, func() bool {
				id, _ := e.loudestEvent()
				return id == speaker.identity && carol.loudest() == speaker.sid()
			})
		if took := time.Since(start); took > time.Second {
			t.Errorf("turn %d: %s became the active speaker after %v, want within 1 s", i+1, speaker.identity, took)
		}
		sfutest.WaitFor(t, speaker.identity+" the only speaker", 3*time.Second, func() bool {
			id, n := e.loudestEvent()
			return id == speaker.identity && n == 1
		})
		time.Sleep(500 * time.Millisecond)
	}
	// Everyone silent: the set empties.
	alice.level.Store(127)
	bob.level.Store(127)
	sfutest.WaitFor(t, "nobody speaking", 3*time.Second, func() bool {
		id, _ := e.loudestEvent()
		return id == "" && carol.loudest() == ""
	})

	var last time.Time
	var levels []int
	for _, ev := range e.events.Events(0) {
		if ev.Type != sfu.EventSpeakersChanged {
			continue
		}
		if !last.IsZero() && ev.Time.Sub(last) < sfu.SpeakerInterval-10*time.Millisecond {
			t.Errorf("speakers.changed %v after the previous one, want at most one per %v", ev.Time.Sub(last), sfu.SpeakerInterval)
		}
		last = ev.Time
		for i, sp := range ev.Speakers {
			levels = append(levels, sp.Level)
			if sp.Level < 1 || sp.Level > 100 || (i > 0 && sp.Level > ev.Speakers[i-1].Level) {
				t.Errorf("speakers.changed %+v: levels not 1-100 loudest first", ev.Speakers)
			}
		}
	}
	// -10 dBov is an amplitude of 0.316.
	for _, l := range levels {
		if l < 1 || l > 40 {
			t.Errorf("a speaker at -10 dBov has level %d, want at most 32", l)
		}
	}
	carol.mu.Lock()
	defer carol.mu.Unlock()
	for _, m := range carol.got {
		for _, sp := range m.GetSpeakersChanged().GetSpeakers() {
			if sp.GetActive() && (sp.GetLevel() <= 0 || sp.GetLevel() > 1) {
				t.Errorf("SpeakersChanged level %v, want 0-1", sp.GetLevel())
			}
		}
	}
}
