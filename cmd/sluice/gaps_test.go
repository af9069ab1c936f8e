package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest/rtsp/rtsptest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
)

// waitLogged polls the daemon's event log until an event matches.
func (d *daemonProc) waitLogged(t *testing.T, what string, timeout time.Duration, match func(sfu.Event) bool) sfu.Event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, ev := range d.loggedEvents() {
			if match(ev) {
				return ev
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s in the event log within %v", what, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// In key mode (the log read with an admin token): a request without a token is auth.failed; a
// camera whose media stops for longer than interrupt_after (3 s), then resumes, has its tracks
// interrupted and recovered; a WHIP publisher whose audio starts 2 s after its video has the
// audio track reported by stream.updated.
func TestEventsOfRefusalsGapsAndLateTracks(t *testing.T) {
	const key, secret = "gapkey", "gaps-secret-0123456789abcdef0123"
	cam := rtsptest.NewCamera(t, rtsptest.CameraOptions{})
	d := startDaemon(t, fmt.Sprintf(`auth: { keys: { %s: %q } }
ingests:
  - { id: yard-cam, type: rtsp_pull, room: yard, url: %q, transport: tcp }
`, key, secret, cam.URL("", "")))

	resp, err := http.Post(d.URL+"/whip/studio", "application/sdp", strings.NewReader("v=0\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("WHIP without a token: %s", resp.Status)
	}
	refused := d.waitLogged(t, "auth.failed", 10*time.Second, func(e sfu.Event) bool { return e.Type == sfu.EventAuthFailed })
	if refused.Reason != sfu.AuthMissingToken {
		t.Errorf("auth.failed reason %q, want %s", refused.Reason, sfu.AuthMissingToken)
	}

	inYard := func(typ string) func(sfu.Event) bool {
		return func(e sfu.Event) bool {
			return e.Type == typ && e.Room != nil && e.Room.Name == "yard" && e.Track != nil
		}
	}
	d.waitLogged(t, "the camera's tracks", 30*time.Second, inYard(sfu.EventTrackPublished))
	time.Sleep(time.Second) // media flowing
	cam.Paused.Store(true)
	interrupted := d.waitLogged(t, "track.interrupted", 10*time.Second, inYard(sfu.EventTrackInterrupted))
	cam.Paused.Store(false)
	recovered := d.waitLogged(t, "track.recovered", 10*time.Second, func(e sfu.Event) bool {
		return inYard(sfu.EventTrackRecovered)(e) && e.Track.SID == interrupted.Track.SID
	})
	if recovered.Seq <= interrupted.Seq {
		t.Errorf("track.recovered (seq %d) before track.interrupted (seq %d)", recovered.Seq, interrupted.Seq)
	}

	tok, err := auth.Sign(key, secret, auth.Claims{Identity: "late-audio", ExpiresAt: time.Now().Add(time.Hour).Unix(),
		Grants: auth.Grants{Room: "studio", Publish: true}})
	if err != nil {
		t.Fatal(err)
	}
	pub := newWHIPPublisherWith(t, d.URL+"/whip/studio", tok, 2*time.Second)
	defer pub.close()
	ofLate := func(typ string) func(sfu.Event) bool {
		return func(e sfu.Event) bool {
			return e.Type == typ && e.Participant != nil && e.Participant.Identity == "late-audio"
		}
	}
	publishing := d.waitLogged(t, "stream.publishing", 20*time.Second, ofLate(sfu.EventStreamPublishing))
	updated := d.waitLogged(t, "stream.updated", 20*time.Second, ofLate(sfu.EventStreamUpdated))
	if len(publishing.Stream.Tracks) != 1 || len(updated.Stream.Tracks) != 2 || updated.Stream.SID != publishing.Stream.SID {
		t.Errorf("stream.publishing lists %v, stream.updated %v (stream %s then %s)", publishing.Stream.Tracks,
			updated.Stream.Tracks, publishing.Stream.SID, updated.Stream.SID)
	}
}
