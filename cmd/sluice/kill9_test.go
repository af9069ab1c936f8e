package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-media/sluice/egress/egresstest"
	"github.com/sluice-media/sluice/ingest/rtsp/rtsptest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// descendants returns the pids of every process under pid.
func descendants(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		for _, f := range strings.Fields(string(raw)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
				out = append(out, descendants(c)...)
			}
		}
	}
	return out
}

// alive reports whether pid is a process that has not exited (a zombie has).
func alive(pid int) bool {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 0 && fields[0] != "Z"
}

// kill -9 of the daemon while two RTSP cameras are pulled and one of them is broadcast (its
// G.711 audio transcoded to AAC by an ffmpeg child): no child outlives the daemon; after the
// restart both pulls reconnect unattended, and the broadcast and every stream, participant and
// track open at the kill get exactly one terminal event (reason error).
func TestKill9WithPullsAndBroadcast(t *testing.T) {
	sfutest.RequireTool(t, "ffmpeg")
	platform := egresstest.StartPlatform(t, egresstest.PlatformOptions{})
	d := startDaemon(t, broadcastYAML)
	gate := rtsptest.NewCamera(t, rtsptest.CameraOptions{}) // H.264 + G.711
	yard := rtsptest.NewCamera(t, rtsptest.CameraOptions{Audio: "aac"})
	pulls := []string{createPull(t, d, "gate", gate.URL("", "")), createPull(t, d, "yard", yard.URL("", ""))}
	for _, id := range pulls {
		d.waitIngest(t, id, "connected", 30*time.Second)
	}
	b := startBroadcast(t, d, "--room", "gate", "--url", platform.URL(keyMain))
	sfutest.WaitFor(t, "the broadcast to be active", 30*time.Second, func() bool { return showBroadcast(t, d, b.ID).Status == "active" })
	children := descendants(d.cmd.Process.Pid)
	t.Logf("the daemon's children at the kill: %v", children)
	before := logEvents(t, d.URL)
	open := map[string]int{} // participants, streams and tracks open at the kill
	for _, ev := range before {
		switch ev.Type {
		case sfu.EventParticipantJoined:
			open["participant "+ev.Participant.SID]++
		case sfu.EventParticipantLeft:
			open["participant "+ev.Participant.SID]--
		case sfu.EventStreamPublishing:
			open["stream "+ev.Stream.SID]++
		case sfu.EventStreamUnpublished, sfu.EventStreamFailed:
			open["stream "+ev.Stream.SID]--
		case sfu.EventTrackPublished:
			open["track "+ev.Track.SID]++
		case sfu.EventTrackUnpublished:
			open["track "+ev.Track.SID]--
		}
	}
	d.kill()
	sfutest.WaitFor(t, "the daemon's children to exit with it", 10*time.Second, func() bool {
		for _, c := range children {
			if alive(c) {
				return false
			}
		}
		return true
	})
	t.Cleanup(func() {
		for _, c := range children {
			_ = syscall.Kill(c, syscall.SIGKILL)
		}
	})

	d.start()
	for _, id := range pulls {
		d.waitIngest(t, id, "connected", 30*time.Second)
	}
	var terminal []sfu.Event
	sfutest.WaitFor(t, "the broadcast's terminal event", 30*time.Second, func() bool {
		terminal = terminal[:0]
		for _, ev := range broadcastEvents(t, d) {
			if ev.Broadcast != nil && ev.Broadcast.ID == b.ID && (ev.Type == sfu.EventBroadcastEnded || ev.Type == sfu.EventBroadcastFailed) {
				terminal = append(terminal, ev)
			}
		}
		return len(terminal) > 0
	})
	time.Sleep(time.Second) // a duplicate would come with the first
	all := logEvents(t, d.URL)
	ended := 0
	for _, ev := range all {
		if ev.Broadcast != nil && ev.Broadcast.ID == b.ID && (ev.Type == sfu.EventBroadcastEnded || ev.Type == sfu.EventBroadcastFailed) {
			ended++
		}
	}
	if ended != 1 || terminal[0].Reason != sfu.ReasonError {
		t.Errorf("broadcast %s: %d terminal events, the first with reason %q; want one, reason error", b.ID, ended, terminal[0].Reason)
	}
	for _, ev := range all[len(before):] {
		switch ev.Type {
		case sfu.EventParticipantLeft:
			open["participant "+ev.Participant.SID]--
		case sfu.EventStreamUnpublished, sfu.EventStreamFailed:
			open["stream "+ev.Stream.SID]--
		case sfu.EventTrackUnpublished:
			open["track "+ev.Track.SID]--
		}
	}
	for what, n := range open {
		if n != 0 {
			t.Errorf("%s: %+d terminal events missing after the restart", what, n)
		}
	}
	for _, id := range pulls {
		d.waitIngest(t, id, "connected", 5*time.Second)
	}
}
