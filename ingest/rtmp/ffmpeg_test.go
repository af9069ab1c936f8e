package rtmp

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph265"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/av1"
	"github.com/pion/rtp"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/rtmpproto"
	"github.com/sluice-media/sluice/sfu/rtmpproto/rtmptest"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// ffmpegPublish starts ffmpeg as OBS would publish: libx264 High with B-frames, a keyframe
// every 2 s at 30 fps, AAC at 48 kHz, in real time, to url. It is killed when the test ends.
func ffmpegPublish(t *testing.T, url string, seconds int) (*exec.Cmd, *sfutest.Buffer, <-chan struct{}) {
	t.Helper()
	bin := sfutest.RequireTool(t, "ffmpeg")
	args := []string{"-hide_banner", "-loglevel", "warning", "-re",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", strconv.Itoa(seconds),
		"-c:v", "libx264", "-profile:v", "high", "-preset", "veryfast", "-bf", "2", "-g", "60", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-ar", "48000", "-b:a", "64k",
		"-f", "flv", url}
	cmd := exec.Command(bin, args...)
	out := &sfutest.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	must(t, cmd.Start())
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	return cmd, out, exited
}

// ffmpeg killed with SIGKILL mid-stream: its session ends with stream.failed (the connection
// closed before it unpublished) and participant.left client_disconnected; another session
// goes on.
func TestFFmpegKilledMidStream(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	_, bg := background(t, h, "room/busy", "room", "busy")
	cmd, _, _ := ffmpegPublish(t, "rtmp://"+h.addr+"/live/room/ff", 60)
	h.WaitEvent("stream.publishing", 20*time.Second, is(sfu.EventStreamPublishing, "ff"))
	flowing(t, trackOf(t, h.Participant("room", "ff"), sfu.KindVideo), 10*time.Second)
	must(t, cmd.Process.Signal(syscall.SIGKILL))
	e := h.WaitEvent("stream.failed", 10*time.Second, is(sfu.EventStreamFailed, "ff"))
	if e.Reason != sfu.ReasonClientDisconnected || e.Error == nil {
		t.Errorf("stream.failed %+v %+v", e, e.Error)
	}
	h.WaitEvent("participant.left", 5*time.Second, isReason(sfu.EventParticipantLeft, "ff", sfu.ReasonClientDisconnected))
	untouched(t, h, "busy", bg)
}

// ffmpeg with a wrong key (auth keys configured) is told so and gives up.
func TestFFmpegWrongKey(t *testing.T) {
	h := newHarness(t, harnessOptionsWithKeys())
	cmd, out, exited := ffmpegPublish(t, "rtmp://"+h.addr+"/live/sk_wrongwrongwrongwrongwrong", 30)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		t.Fatal("ffmpeg kept trying with a wrong key")
	}
	if cmd.ProcessState.Success() {
		t.Fatalf("ffmpeg succeeded with a wrong key:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "Unknown stream key") {
		t.Errorf("ffmpeg did not show the server's refusal:\n%s", out.String())
	}
	e := h.WaitEvent("auth.failed", 5*time.Second, is(sfu.EventAuthFailed, ""))
	if e.Reason != sfu.AuthUnknownStreamKey {
		t.Errorf("auth.failed %+v", e)
	}
}

func harnessOptionsWithKeys() harnessOptions {
	return harnessOptions{auth: auth.Config{Keys: map[string]string{"app": "a-secret-of-at-least-32-characters-long"}}}
}

// HEVC over Enhanced RTMP, as OBS 30 sends it: the installed ffmpeg (5.1) cannot, so a
// go-rtmp client sends real libx265 output as hvc1 tags (a sequence start with the
// HEVCDecoderConfigurationRecord, then coded frames). The track is H265 with the SPS's
// resolution, and what comes out of it decodes.
func TestHEVCOverEnhancedRTMP(t *testing.T) {
	bin := sfutest.RequireTool(t, "ffmpeg")
	dir := t.TempDir()
	src := filepath.Join(dir, "in.hevc")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	gen := exec.CommandContext(ctx, bin, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=352x288:rate=30",
		"-frames:v", "90", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "keyint=30:bframes=0:log-level=error",
		"-pix_fmt", "yuv420p", "-f", "hevc", src)
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("libx265: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(src)
	must(t, err)
	aus := hevcAccessUnits(annexBNALUs(raw))
	if len(aus) != 90 {
		t.Fatalf("%d access units", len(aus))
	}
	var vps, sps, pps []byte
	for _, n := range aus[0] {
		switch (n[0] >> 1) & 0x3f {
		case 32:
			vps = n
		case 33:
			sps = n
		case 34:
			pps = n
		}
	}

	h := newHarness(t, harnessOptions{})
	c := dialClient(t, h.addr, nil)
	c.mustPublish("hevc/obs")
	must(t, c.video(0, rtmptest.ExVideoTag("hvc1", rtmpproto.ExSequenceStart, true, 0, rtmptest.HEVCConfigRecord(vps, sps, pps))))
	p := h.Participant("hevc", "obs")
	video := trackOf(t, p, sfu.KindVideo)
	s := &sink{}
	sub, err := video.Subscribe(s, sfu.SubscribeOptions{QueueSize: 8192})
	must(t, err)
	defer sub.Close()
	for i, au := range aus {
		var frame [][]byte
		key := false
		for _, n := range au {
			typ := (n[0] >> 1) & 0x3f
			if typ >= 32 && typ <= 34 {
				continue // parameter sets travel in the configuration record
			}
			key = key || (typ >= 16 && typ <= 21)
			frame = append(frame, n)
		}
		pkt := byte(rtmpproto.ExCodedFrames)
		if i%2 == 1 {
			pkt = rtmpproto.ExCodedFramesX // both forms OBS uses
		}
		must(t, c.video(uint32(i*1000/30), rtmptest.ExVideoTag("hvc1", pkt, key, 0, rtmptest.LengthPrefixed(frame...))))
	}
	sfutest.WaitFor(t, "every frame", 20*time.Second, func() bool {
		n := 0
		for _, pk := range s.all() {
			if pk.Header.Marker {
				n++
			}
		}
		return n == len(aus)
	})
	if c := video.Codec(); c.Name != sfu.CodecH265 {
		t.Fatalf("track codec %q, want H265", c.Name)
	}
	if w, hgt := video.Size(); w != 352 || hgt != 288 {
		t.Errorf("track size %dx%d, want 352x288", w, hgt)
	}
	pkts := s.all()
	if !pkts[0].Keyframe || !sfu.IsKeyframe(sfu.CodecH265, pkts[0].Payload) {
		t.Error("the first packet does not start a keyframe")
	}

	// Depacketize (RFC 7798) and decode what the track carried.
	dec := &rtph265.Decoder{}
	must(t, dec.Init())
	var out bytes.Buffer
	for _, pk := range pkts {
		au, err := dec.Decode(&rtp.Packet{Header: pk.Header, Payload: pk.Payload})
		if err != nil {
			continue
		}
		for _, n := range au {
			out.Write([]byte{0, 0, 0, 1})
			out.Write(n)
		}
	}
	dst := filepath.Join(dir, "out.hevc")
	must(t, os.WriteFile(dst, out.Bytes(), 0o600))
	probe, err := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
		"-show_entries", "stream=codec_name,width,height,nb_read_frames", "-of", "csv=p=0", dst).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe: %v\n%s", err, probe)
	}
	if got := strings.TrimSpace(string(probe)); got != "hevc,352,288,90" {
		t.Errorf("ffprobe of the track's output: %q, want hevc,352,288,90", got)
	}
}

// annexBNALUs splits an Annex-B byte stream at its start codes.
func annexBNALUs(b []byte) [][]byte {
	var out [][]byte
	start := -1
	for i := 0; i+3 <= len(b); i++ {
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 {
			if start >= 0 {
				out = append(out, bytes.TrimRight(b[start:i], "\x00"))
			}
			start = i + 3
			i += 2
		}
	}
	if start >= 0 {
		out = append(out, b[start:])
	}
	return out
}

// hevcAccessUnits groups H.265 NAL units into access units (H.265 §7.4.2.4.4): a new one
// starts at a parameter set, prefix SEI or AUD after a picture, or at a slice with
// first_slice_segment_in_pic_flag.
func hevcAccessUnits(nalus [][]byte) [][][]byte {
	var aus [][][]byte
	var cur [][]byte
	hasVCL := false
	for _, n := range nalus {
		if len(n) < 3 {
			continue
		}
		typ := (n[0] >> 1) & 0x3f
		vcl := typ < 32
		if hasVCL && ((typ >= 32 && typ <= 35) || typ == 39 || (vcl && n[2]&0x80 != 0)) {
			aus = append(aus, cur)
			cur, hasVCL = nil, false
		}
		cur = append(cur, n)
		hasVCL = hasVCL || vcl
	}
	if len(cur) > 0 {
		aus = append(aus, cur)
	}
	return aus
}

// VP9 and AV1 over Enhanced RTMP (vp09, av01) are published with their codec, from real
// encoder output (libvpx-vp9 in IVF, libsvtav1 as an OBU stream): the tracks carry every
// frame, start on a keyframe and know their resolution.
func TestEnhancedRTMPVP9AndAV1(t *testing.T) {
	bin := sfutest.RequireTool(t, "ffmpeg")
	cases := []struct {
		fourCC, codec, encoder, format string
		frames                         func(b []byte) ([][]byte, []bool)
	}{
		{"vp09", sfu.CodecVP9, "libvpx-vp9", "ivf", ivfFrames},
		{"av01", sfu.CodecAV1, "libsvtav1", "obu", av1TemporalUnits},
	}
	h := newHarness(t, harnessOptions{})
	for _, tc := range cases {
		t.Run(tc.fourCC, func(t *testing.T) {
			src := filepath.Join(t.TempDir(), "in."+tc.format)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			args := []string{"-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
				"-frames:v", "30", "-c:v", tc.encoder, "-g", "15"}
			if tc.encoder == "libsvtav1" {
				args = append(args, "-preset", "12")
			} else {
				args = append(args, "-deadline", "realtime")
			}
			gen := exec.CommandContext(ctx, bin, append(args, "-f", tc.format, src)...)
			if out, err := gen.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", tc.encoder, err, out)
			}
			raw, err := os.ReadFile(src)
			must(t, err)
			frames, keys := tc.frames(raw)
			if len(frames) == 0 || !keys[0] {
				t.Fatalf("%d frames, first key %v", len(frames), keys)
			}
			c := dialClient(t, h.addr, nil)
			c.mustPublish("ex/" + tc.fourCC)
			for i, f := range frames {
				must(t, c.video(uint32(i*33), rtmptest.ExVideoTag(tc.fourCC, rtmpproto.ExCodedFramesX, keys[i], 0, f)))
			}
			tr := trackOf(t, h.Participant("ex", tc.fourCC), sfu.KindVideo)
			if tr.Codec().Name != tc.codec {
				t.Fatalf("codec %q", tr.Codec().Name)
			}
			sfutest.WaitFor(t, "the resolution", 10*time.Second, func() bool { w, hgt := tr.Size(); return w == 320 && hgt == 240 })
			sfutest.WaitFor(t, "a packet per frame at least", 10*time.Second, func() bool { return packetsOf(tr) >= uint64(len(frames)) })
		})
	}
}

// ivfFrames returns the frames of an IVF file and whether each is a VP9 keyframe.
func ivfFrames(b []byte) ([][]byte, []bool) {
	var frames [][]byte
	var keys []bool
	if len(b) < 32 {
		return nil, nil
	}
	hdr := int(b[6]) | int(b[7])<<8
	for b = b[hdr:]; len(b) >= 12; {
		n := int(b[0]) | int(b[1])<<8 | int(b[2])<<16 | int(b[3])<<24
		if 12+n > len(b) {
			break
		}
		f := b[12 : 12+n]
		frames = append(frames, f)
		keys = append(keys, len(f) > 0 && f[0]&0x04 == 0 && f[0]>>6 == 2) // frame_type 0, VP9 §6.2 (profile 0)
		b = b[12+n:]
	}
	return frames, keys
}

// av1TemporalUnits splits an AV1 low-overhead OBU stream at its temporal delimiters; a unit
// with a sequence header is a keyframe.
func av1TemporalUnits(b []byte) ([][]byte, []bool) {
	var tus [][]byte
	var keys []bool
	for len(b) > 0 {
		typ := (b[0] >> 3) & 0x0f
		hdr := 1
		if b[0]&0x04 != 0 {
			hdr = 2
		}
		var size av1.LEB128
		n, err := size.Unmarshal(b[hdr:])
		if err != nil {
			break
		}
		total := hdr + n + int(size)
		if typ == 2 { // temporal delimiter: a new unit
			tus = append(tus, nil)
			keys = append(keys, false)
		} else if len(tus) > 0 {
			tus[len(tus)-1] = append(tus[len(tus)-1], b[:total]...)
			if typ == 1 {
				keys[len(keys)-1] = true
			}
		}
		b = b[total:]
	}
	return tus, keys
}
