package main

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// hlsConfig is the hls: section of the HLS tests: a short idle time to watch the muxer stop.
const hlsConfig = "hls: { part_duration: 200ms, segment_duration: 1s, idle_timeout: 3s }\n"

// ffmpeg reads the LL-HLS playlist of an RTMP room (H.264 High with B-frames, AAC) and decodes
// it: video and audio frames for the time read, no decode error. Once the reader is gone the
// muxer stops after its idle time, and its participant leaves with its play stream.
func TestHLSFromRTMPDecodes(t *testing.T) {
	d := startDaemon(t, hlsConfig)
	ffmpegOBS(t, fmt.Sprintf("rtmp://127.0.0.1:%d/live/hlsroom", d.RTMPPort), 60, 2)
	d.waitPublisher(t, "hlsroom", 2)

	bin := sfutest.RequireTool(t, "ffmpeg")
	const seconds = 6
	cmd := exec.Command(bin, "-hide_banner", "-v", "error", "-i", d.URL+"/hls/hlsroom/index.m3u8",
		"-t", fmt.Sprint(seconds), "-f", "framecrc", "-")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ffmpeg reading the playlist: %v\n%s", err, stderr.String())
	}
	video, audio := 0, 0
	for _, line := range strings.Split(stdout.String(), "\n") {
		switch {
		case strings.HasPrefix(line, "0,"):
			video++
		case strings.HasPrefix(line, "1,"):
			audio++
		}
	}
	t.Logf("decoded %d video and %d audio frames in %d s", video, audio, seconds)
	// 30 fps and 48 kHz AAC (1024 samples a frame): allow 10 % for the cut at -t
	if video < seconds*30*9/10 || audio < seconds*47*9/10 {
		t.Errorf("decoded %d video and %d audio frames; want about %d and %d", video, audio, seconds*30, seconds*47)
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		t.Errorf("ffmpeg reported errors:\n%s", tail(s, 20))
	}

	// the reader is gone: the muxer stops after idle_timeout (3 s)
	var left, stopped *sfu.Event
	deadline := time.Now().Add(15 * time.Second)
	for (left == nil || stopped == nil) && time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		for _, ev := range d.loggedEvents() {
			switch {
			case ev.Type == sfu.EventParticipantLeft && ev.Participant != nil && ev.Participant.Kind == sfu.ParticipantHLS:
				left = &ev
			case ev.Type == sfu.EventStreamStopped && ev.Stream != nil && ev.Stream.Protocol == sfu.ProtocolHLS:
				stopped = &ev
			}
		}
	}
	if left == nil || stopped == nil {
		t.Fatalf("the HLS muxer did not stop after its idle time (participant.left %v, stream.stopped %v)", left != nil, stopped != nil)
	}
	if left.Reason != sfu.ReasonClientDisconnected {
		t.Errorf("the muxer left with reason %q", left.Reason)
	}
	if !strings.Contains(d.logs.String(), "hls muxer idle: stopping") {
		t.Errorf("the daemon did not log the idle stop")
	}
	// a new request starts a new muxer
	out, err := exec.Command(bin, "-hide_banner", "-v", "error", "-i", d.URL+"/hls/hlsroom/index.m3u8", "-t", "1", "-f", "null", "-").CombinedOutput()
	if err != nil {
		t.Fatalf("reading again after the idle stop: %v\n%s", err, out)
	}
}
