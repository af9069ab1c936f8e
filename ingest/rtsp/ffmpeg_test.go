package rtsp

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/transport/v4/test"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// ffmpeg pushes H.264 + AAC with -f rtsp over TCP and over UDP; ffmpeg plays the room back and
// decodes it without a single error, and ffprobe counts the frames; when the push ends the
// stream is unpublished normally.
func TestFFmpegPushAndPlay(t *testing.T) {
	t.Cleanup(test.CheckRoutines(t)) // runs last: after every other cleanup
	ffmpeg := sfutest.RequireTool(t, "ffmpeg")
	ffprobe := sfutest.RequireTool(t, "ffprobe")
	for _, transport := range []string{"tcp", "udp"} {
		t.Run(transport, func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			url := "rtsp://" + h.rtsp + "/show"
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			push := exec.CommandContext(ctx, ffmpeg, "-hide_banner", "-v", "error", "-re",
				"-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
				"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
				"-t", "14", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-profile:v", "baseline",
				"-pix_fmt", "yuv420p", "-g", "25", "-c:a", "aac", "-b:a", "64k", "-ac", "2",
				"-f", "rtsp", "-rtsp_transport", transport, url+"/ffmpeg")
			var pushErr bytes.Buffer
			push.Stderr = &pushErr
			if err := push.Start(); err != nil {
				t.Fatal(err)
			}
			pushDone := make(chan error, 1)
			go func() { pushDone <- push.Wait() }()
			defer func() {
				cancel()
				<-pushDone
			}()
			sfutest.WaitFor(t, "ffmpeg's tracks", 20*time.Second, func() bool {
				p := h.participant("show", "ffmpeg")
				if p == nil || len(p.Tracks()) != 2 {
					return false
				}
				v, a := trackOf(p, sfu.KindVideo), trackOf(p, sfu.KindAudio)
				return v.Codec().Name == sfu.CodecH264 && a.Codec().Name == sfu.CodecAAC && !v.LastPacketAt().IsZero()
			})

			// Decode 4 s of the room: not a single error.
			play := exec.CommandContext(ctx, ffmpeg, "-hide_banner", "-v", "error", "-rtsp_transport", transport,
				"-i", url, "-t", "4", "-f", "null", "-")
			out, err := play.CombinedOutput()
			if err != nil || len(bytes.TrimSpace(out)) > 0 {
				t.Errorf("ffmpeg play: %v\n%q", err, out)
			}

			// ffprobe counts what 3 s of the room hold.
			probe := exec.CommandContext(ctx, ffprobe, "-v", "error", "-rtsp_transport", transport, "-count_frames",
				"-read_intervals", "%+3", "-show_entries", "stream=codec_type,codec_name,width,height,nb_read_frames",
				"-of", "json", url)
			var stderr bytes.Buffer
			probe.Stderr = &stderr
			raw, err := probe.Output()
			if err != nil {
				t.Fatalf("ffprobe: %v\n%s", err, stderr.String())
			}
			var res struct {
				Streams []struct {
					CodecType    string `json:"codec_type"`
					CodecName    string `json:"codec_name"`
					Width        int    `json:"width"`
					NbReadFrames string `json:"nb_read_frames"`
				} `json:"streams"`
			}
			if err := json.Unmarshal(raw, &res); err != nil {
				t.Fatalf("ffprobe output %s: %v", raw, err)
			}
			got := map[string]string{}
			for _, s := range res.Streams {
				got[s.CodecType] = s.CodecName + "/" + s.NbReadFrames
				n, _ := strconv.Atoi(s.NbReadFrames)
				if s.CodecType == "video" && (s.CodecName != "h264" || s.Width != 320 || n < 40) {
					t.Errorf("video %+v", s)
				}
				if s.CodecType == "audio" && (s.CodecName != "aac" || n < 80) {
					t.Errorf("audio %+v", s)
				}
			}
			t.Logf("ffprobe over %s, 3 s: %v (stderr %q)", transport, got, strings.TrimSpace(stderr.String()))
			if len(res.Streams) != 2 {
				t.Errorf("ffprobe sees %d streams", len(res.Streams))
			}

			seq := h.lastSeq()
			select {
			case err := <-pushDone:
				pushDone <- err
				if err != nil {
					t.Errorf("ffmpeg push: %v\n%s", err, pushErr.String())
				}
			case <-time.After(30 * time.Second):
				t.Fatal("ffmpeg push did not end")
			}
			ev := h.waitEvent("stream.unpublished", seq, 10*time.Second, func(e sfu.Event) bool {
				return (e.Type == sfu.EventStreamUnpublished || e.Type == sfu.EventStreamFailed) && e.Participant.Identity == "ffmpeg"
			})
			if ev.Type != sfu.EventStreamUnpublished || ev.Reason != sfu.ReasonClientDisconnected {
				t.Errorf("the push ended with %s %s %+v", ev.Type, ev.Reason, ev.Error)
			}
		})
	}
}
