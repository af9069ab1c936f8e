package main

import (
	"fmt"
	"os"
	"slices"
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

// kill -9 of the daemon while two RTSP cameras are pulled and broadcast, with a VP8 publisher
// broadcast too (transcoded to H.264 by an ffmpeg child): no child outlives the daemon; after
// the restart both pulls reconnect unattended, and each broadcast and every stream,
// participant and track open at the kill get exactly one terminal event (reason error).
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
	publishVP8(t, d.URL+"/whip/desk")
	d.waitPublisher(t, "desk", 1)
	var bs []sfu.BroadcastInfo
	for i, room := range []string{"gate", "desk"} {
		b := startBroadcast(t, d, "--room", room, "--url", platform.URL(fmt.Sprintf("%s-%d", keyMain, i)))
		sfutest.WaitFor(t, "the broadcast of "+room+" to be active", 30*time.Second, func() bool { return showBroadcast(t, d, b.ID).Status == "active" })
		bs = append(bs, b)
	}
	children := descendants(d.cmd.Process.Pid)
	t.Logf("the daemon's children at the kill: %v", children)
	if len(children) == 0 {
		t.Fatal("no ffmpeg child runs: the VP8 broadcast is not transcoded")
	}
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
	isEnd := func(ev sfu.Event, id string) bool {
		return ev.Broadcast != nil && ev.Broadcast.ID == id && (ev.Type == sfu.EventBroadcastEnded || ev.Type == sfu.EventBroadcastFailed)
	}
	sfutest.WaitFor(t, "the broadcasts' terminal events", 30*time.Second, func() bool {
		evs := broadcastEvents(t, d)
		for _, b := range bs {
			if !slices.ContainsFunc(evs, func(ev sfu.Event) bool { return isEnd(ev, b.ID) }) {
				return false
			}
		}
		return true
	})
	time.Sleep(time.Second) // a duplicate would come with the first
	all := logEvents(t, d.URL)
	for _, b := range bs {
		var ends []string
		for _, ev := range all {
			if isEnd(ev, b.ID) {
				ends = append(ends, ev.Type+" "+ev.Reason)
			}
		}
		if len(ends) != 1 || !strings.HasSuffix(ends[0], " "+sfu.ReasonError) {
			t.Errorf("broadcast %s of %s: terminal events %v, want one, reason error", b.ID, b.Room, ends)
		}
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
