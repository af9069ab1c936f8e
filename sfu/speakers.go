package sfu

import (
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// SpeakerInterval is the period of the active speaker evaluation: speakers.changed comes at
// most this often per room, and only when the ordered set changed.
const SpeakerInterval = 500 * time.Millisecond

// Speaker detection thresholds: a packet is voice when its level is at least as loud as
// speakerActiveDBov (RFC 6464 -dBov: 0 is the loudest, 127 silence), and a track speaks in an
// evaluation window when at least speakerMinPercent of its packets, and speakerMinPackets of
// them, are voice (livekit's defaults are 35 dBov and 40 %).
const (
	speakerActiveDBov = 40
	speakerMinPercent = 40
	speakerMinPackets = 4
	// speakerLevelStep is the change of a speaker's level (0-100) that counts as a change of
	// the set even when the order stays.
	speakerLevelStep = 10
)

// amplitude is 10^(-dBov/20) scaled by 1e4: the linear amplitude of each RFC 6464 level, so
// that the per-packet path does no floating point.
var amplitude = func() (t [128]uint32) {
	for i := range t {
		t[i] = uint32(math.Round(1e4 * math.Pow(10, -float64(i)/20)))
	}
	return t
}()

// AudioLevel accumulates the audio levels of one track's packets (the RFC 6464 header
// extension of WebRTC publishers). Observe is called per packet by the producer: lock-free, no
// allocation. The hub's speaker evaluation takes the counts every speakerTick into a sliding
// window of SpeakerInterval.
type AudioLevel struct {
	packets atomic.Uint32
	voice   atomic.Uint32
	sum     atomic.Uint64 // amplitudes (×1e4) of the voice packets

	// The window, owned by the hub's speaker evaluation.
	slots [speakerSlots]levelSlot
	next  int
}

// levelSlot is one speakerTick of counts.
type levelSlot struct {
	packets, voice uint32
	sum            uint64
}

// speakerTick is the period of the speaker evaluation; the window is SpeakerInterval.
const (
	speakerTick  = 100 * time.Millisecond
	speakerSlots = int(SpeakerInterval / speakerTick)
)

// NewAudioLevel returns an empty level meter.
func NewAudioLevel() *AudioLevel { return &AudioLevel{} }

// Observe counts one packet whose level is dBov (RFC 6464: 0 loudest … 127 silence; the voice
// activity bit masked off).
func (a *AudioLevel) Observe(dBov uint8) {
	dBov &= 0x7f
	a.packets.Add(1)
	if dBov <= speakerActiveDBov {
		a.voice.Add(1)
		a.sum.Add(uint64(amplitude[dBov]))
	}
}

// take moves the counts since the last call into the window and returns the window's level
// (0-100, 0 when the track did not speak).
func (a *AudioLevel) take() int {
	a.slots[a.next] = levelSlot{packets: a.packets.Swap(0), voice: a.voice.Swap(0), sum: a.sum.Swap(0)}
	a.next = (a.next + 1) % speakerSlots
	var w levelSlot
	for _, s := range a.slots {
		w.packets += s.packets
		w.voice += s.voice
		w.sum += s.sum
	}
	if w.voice < speakerMinPackets || w.voice*100 < w.packets*speakerMinPercent {
		return 0
	}
	// The mean amplitude over every packet of the window, silent ones counting 0, so that a
	// speaker who stops fades while one who starts rises.
	level := int((w.sum/uint64(w.packets) + 50) / 100)
	return max(level, 1)
}

// speakerState is a room's speaker evaluation, owned by the hub's activity goroutine.
type speakerState struct {
	lastEmit time.Time
	sent     []Speaker // as last emitted
}

// speakers is the room's current active speakers, for watchers (LiveKit sessions).
type speakerSet struct {
	mu      sync.Mutex
	current []Speaker
	changed signal
}

// Speakers returns the room's active speakers, loudest first, as last reported by
// speakers.changed.
func (r *Room) Speakers() []Speaker {
	r.speakers.mu.Lock()
	defer r.speakers.mu.Unlock()
	return slices.Clone(r.speakers.current)
}

// SpeakersChanged returns a channel closed at the room's next speakers.changed.
func (r *Room) SpeakersChanged() <-chan struct{} { return r.speakers.changed.wait() }

// evalSpeakers measures the room's speakers over the last SpeakerInterval (called every
// speakerTick) and emits speakers.changed when the ordered set, or a level by
// speakerLevelStep, changed, at most once per SpeakerInterval.
func (r *Room) evalSpeakers(now time.Time) {
	var list []Speaker
	for _, p := range r.Participants() {
		level := 0
		for _, t := range p.Tracks() {
			if a := t.spec.AudioLevel; a != nil {
				level = max(level, a.take())
			}
		}
		if level > 0 {
			list = append(list, Speaker{Identity: p.identity, SID: p.sid, Level: level})
		}
	}
	slices.SortStableFunc(list, func(a, b Speaker) int { return b.Level - a.Level })
	if !speakersDiffer(r.speakerEval.sent, list) || now.Sub(r.speakerEval.lastEmit) < SpeakerInterval {
		return
	}
	r.speakerEval.sent, r.speakerEval.lastEmit = list, now
	r.opMu.Lock()
	if r.isClosed() {
		r.opMu.Unlock()
		return
	}
	r.speakers.mu.Lock()
	r.speakers.current = list
	r.speakers.mu.Unlock()
	r.hub.emit.Emit(&Event{Type: EventSpeakersChanged, Room: r.Info(), Speakers: slices.Clone(list)})
	r.opMu.Unlock()
	r.speakers.changed.fire()
}

// speakersDiffer reports whether b is another ordered set than a, or a level moved by a step.
func speakersDiffer(a, b []Speaker) bool {
	if len(a) != len(b) {
		return true
	}
	for i := range a {
		d := a[i].Level - b[i].Level
		if a[i].SID != b[i].SID || d >= speakerLevelStep || -d >= speakerLevelStep {
			return true
		}
	}
	return false
}
