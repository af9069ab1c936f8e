package main

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
)

// turnPeriod is the speakers.html turn: each browser is loud for 3 s, then silent for 3 s.
const turnPeriod = 3000 // ms

// speakerOf returns who speakers.html makes loud at unix millisecond ms.
func speakerOf(ms int64) string {
	if ms/turnPeriod%2 == 0 {
		return "alice"
	}
	return "bob"
}

// checkTurns checks that firsts (the loudest speaker, when it changed, and when) follows the
// turns that began from (unix ms): every change names the speaker of its turn, at most a
// second after the turn began, and at least three turns are seen.
func checkTurns(t *testing.T, who string, from int64, firsts []string, times []int64) {
	t.Helper()
	turns := 0
	for i, id := range firsts {
		if id == "" || times[i] < from {
			continue
		}
		start := times[i] / turnPeriod * turnPeriod
		if speakerOf(times[i]) != id || times[i]-start > 1000 {
			// A change just after a turn began may still name the previous speaker fading out.
			if times[i]-start >= 1000 || speakerOf(start-1) != id {
				t.Errorf("%s: %s became the loudest %d ms into %s's turn", who, id, times[i]-start, speakerOf(times[i]))
			}
			continue
		}
		turns++
	}
	if turns < 3 {
		t.Errorf("%s followed %d turns (%v), want 3", who, turns, firsts)
	}
}

// Two Chromiums publish a tone with livekit-client, taking 3 s turns at being loud: the
// daemon's speakers.changed and each SDK's ActiveSpeakersChanged follow the turns, loudest
// first, each within a second of the turn; participant.quality rates the browsers' links.
func TestLivekitActiveSpeakers(t *testing.T) {
	requireChromium(t)
	requireLivekitClient(t)
	d := startDaemon(t, "")
	ws := "ws" + strings.TrimPrefix(d.URL, "http")
	ps := newPageServer(t)
	for i, id := range []string{"alice", "bob"} {
		ps.openPage(t, "speakers.html", id, url.Values{"url": {ws}, "token": {livekitToken(t, "talk", id)}, "turn": {fmt.Sprint(i)}})
	}
	for _, id := range []string{"alice", "bob"} {
		ps.waitReport(t, id, "published", 30*time.Second, func(r map[string]any) bool { return r["published"] == true })
	}
	// Judged from the first turn that begins once both publish.
	from := (time.Now().UnixMilli()/turnPeriod + 1) * turnPeriod
	time.Sleep(4 * turnPeriod * time.Millisecond)

	var firsts []string
	var times []int64
	for _, e := range d.loggedEvents() {
		if e.Type != sfu.EventSpeakersChanged || e.Room == nil || e.Room.Name != "talk" {
			continue
		}
		first := ""
		for i, sp := range e.Speakers {
			if i > 0 && sp.Level > e.Speakers[i-1].Level || sp.Level < 1 || sp.Level > 100 {
				t.Errorf("speakers.changed %+v: not loudest first with levels 1-100", e.Speakers)
			}
		}
		if len(e.Speakers) > 0 {
			first = e.Speakers[0].Identity
		}
		if len(firsts) == 0 || firsts[len(firsts)-1] != first {
			firsts, times = append(firsts, first), append(times, e.Time.UnixMilli())
		}
	}
	checkTurns(t, "speakers.changed", from, firsts, times)

	for _, id := range []string{"alice", "bob"} {
		r := ps.report(id)
		raw, _ := r["speakers"].([]any)
		firsts, times = nil, nil
		for _, x := range raw {
			m, _ := x.(map[string]any)
			ids, _ := m["ids"].([]any)
			at, _ := m["at"].(float64)
			first := ""
			if len(ids) > 0 {
				first, _ = ids[0].(string)
			}
			if len(firsts) == 0 || firsts[len(firsts)-1] != first {
				firsts, times = append(firsts, first), append(times, int64(at))
			}
		}
		checkTurns(t, id+"'s ActiveSpeakersChanged", from, firsts, times)
	}

	for _, e := range d.loggedEvents() {
		if e.Type == sfu.EventParticipantQuality {
			t.Logf("%s participant.quality %s: uplink %d, downlink %d", e.Time.Format("15:04:05.000"), e.Participant.Identity, *e.Uplink, *e.Downlink)
		}
	}
	quality := d.waitLogged(t, "participant.quality", 10*time.Second, func(e sfu.Event) bool {
		return e.Type == sfu.EventParticipantQuality && e.Participant.Identity == "alice"
	})
	if *quality.Uplink < sfu.QualityExcellent || *quality.Uplink > sfu.QualityGood {
		t.Errorf("alice's uplink on loopback rated %d", *quality.Uplink)
	}
}
