package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"github.com/pion/webrtc/v4/pkg/media/ivfreader"

	"github.com/sluice-media/sluice/sfu/rtc"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// pionAPI is a loopback-only pion stack that knows only the given codecs.
func pionAPI(t *testing.T, codecs []webrtc.RTPCodecParameters, kind webrtc.RTPCodecType) *webrtc.API {
	t.Helper()
	m := &webrtc.MediaEngine{}
	for _, c := range codecs {
		if err := m.RegisterCodec(c, kind); err != nil {
			t.Fatal(err)
		}
	}
	api, err := rtc.LoopbackAPI(m)
	if err != nil {
		t.Fatal(err)
	}
	return api
}

var (
	vp8Only = []webrtc.RTPCodecParameters{{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000,
		RTCPFeedback: []webrtc.RTCPFeedback{{Type: "nack", Parameter: "pli"}}}, PayloadType: 96}}
	h264Only = []webrtc.RTPCodecParameters{{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine:  "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
		RTCPFeedback: []webrtc.RTCPFeedback{{Type: "nack", Parameter: "pli"}}}, PayloadType: 102}}
)

// vp8Publisher publishes a looped VP8 file over WHIP, like a browser that cannot send H.264.
type vp8Publisher struct {
	pc      *webrtc.PeerConnection
	session *rtc.Session
	stop    chan struct{}
	done    chan struct{}
}

func publishVP8(t *testing.T, endpoint string) *vp8Publisher {
	t.Helper()
	path := filepath.Join(t.TempDir(), "src.ivf")
	ffmpeg := sfutest.RequireTool(t, "ffmpeg")
	if out, err := exec.Command(ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=4",
		"-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "500k", "-g", "30", "-f", "ivf", path).CombinedOutput(); err != nil {
		t.Fatalf("making VP8: %v\n%s", err, out)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	r, _, err := ivfreader.NewWith(f)
	if err != nil {
		t.Fatal(err)
	}
	var frames [][]byte
	for {
		b, _, err := r.ParseNextFrame()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, b)
	}
	_ = f.Close()

	pc, err := pionAPI(t, vp8Only, webrtc.RTPCodecTypeVideo).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	track, _ := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "vp8")
	sender, err := pc.AddTrack(track)
	if err != nil {
		t.Fatal(err)
	}
	go func() { // drain RTCP; ends when pc closes
		for {
			if _, _, err := sender.ReadRTCP(); err != nil {
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	sess, err := rtc.Negotiate(ctx, endpoint, "", pc)
	if err != nil {
		_ = pc.Close()
		t.Fatal(err)
	}
	p := &vp8Publisher{pc: pc, session: sess, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(time.Second / 30)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			_ = track.WriteSample(media.Sample{Data: frames[i%len(frames)], Duration: time.Second / 30})
		}
	}()
	t.Cleanup(p.close)
	return p
}

func (p *vp8Publisher) close() {
	select {
	case <-p.stop:
		return
	default:
	}
	close(p.stop)
	<-p.done
	_ = p.session.Close(context.Background())
	_ = p.pc.Close()
}

// h264Viewer is a WHEP viewer that can only take H.264; it keeps the access units it decodes.
type h264Viewer struct {
	pc      *webrtc.PeerConnection
	session *rtc.Session
	mu      sync.Mutex
	stream  []byte
	frames  int
	readers sync.WaitGroup
}

func playH264(endpoint string, api *webrtc.API) (*h264Viewer, error) {
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, err
	}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		_ = pc.Close()
		return nil, err
	}
	v := &h264Viewer{pc: pc}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		v.readers.Add(1)
		defer v.readers.Done()
		dec := &rtph264.Decoder{}
		_ = dec.Init()
		for {
			pkt, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			au, err := dec.Decode(pkt)
			if err != nil {
				continue
			}
			b, err := h264.AnnexB(au).Marshal()
			if err != nil {
				continue
			}
			v.mu.Lock()
			if v.frames > 0 || h264.IsRandomAccess(au) { // a decoder starts at a keyframe
				v.stream = append(v.stream, b...)
				v.frames++
			}
			v.mu.Unlock()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	sess, err := rtc.Negotiate(ctx, endpoint, "", pc)
	if err != nil {
		_ = pc.Close()
		return nil, err
	}
	v.session = sess
	return v, nil
}

func (v *h264Viewer) count() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.frames
}

func (v *h264Viewer) close() {
	_ = v.session.Close(context.Background())
	_ = v.pc.Close()
	v.readers.Wait()
}

// getText fetches a daemon URL.
func getText(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// A browser-like publisher that sends only VP8 is played by a viewer that takes only H.264:
// the daemon transcodes, the viewer's H.264 decodes, and status and metrics show the cost.
// With ffmpeg missing, the daemon still runs and the viewer is refused naming the reason.
func TestVP8PublisherToH264Viewer(t *testing.T) {
	sfutest.RequireTool(t, "ffmpeg")
	d := startDaemon(t, "")
	publishVP8(t, d.URL+"/whip/cam")
	viewerAPI := pionAPI(t, h264Only, webrtc.RTPCodecTypeVideo)
	var v *h264Viewer
	sfutest.WaitFor(t, "the publisher's track", 15*time.Second, func() bool {
		var err error
		v, err = playH264(d.URL+"/whep/cam", viewerAPI)
		return err == nil
	})
	defer v.close()
	sfutest.WaitFor(t, "90 H.264 frames", 30*time.Second, func() bool { return v.count() >= 90 })

	out, err := d.cli("status")
	if err != nil || !strings.Contains(out, "transcoders: 1") || !strings.Contains(out, "VP8 -> H264") {
		t.Errorf("status does not show the transcoder: %v\n%s", err, out)
	}
	var st struct {
		Transcoders []struct {
			From, To   string
			Readers    int
			CPUSeconds float64 `json:"cpu_seconds"`
		} `json:"transcoders"`
	}
	if err := json.Unmarshal([]byte(getText(t, d.URL+"/v1/status")), &st); err != nil || len(st.Transcoders) != 1 ||
		st.Transcoders[0].From != "VP8" || st.Transcoders[0].Readers != 1 {
		t.Errorf("/v1/status transcoders: %+v, %v", st.Transcoders, err)
	}
	metrics := getText(t, d.URL+"/metrics")
	if !strings.Contains(metrics, "sluice_transcoders 1") || !strings.Contains(metrics, "sluice_transcoder_cpu_seconds_total") {
		t.Errorf("metrics lack the transcoder:\n%s", grepLines(metrics, "transcoder"))
	}

	v.mu.Lock()
	stream := bytes.Clone(v.stream)
	v.mu.Unlock()
	path := filepath.Join(t.TempDir(), "viewer.h264")
	if err := os.WriteFile(path, stream, 0o600); err != nil {
		t.Fatal(err)
	}
	probe, err := exec.Command(sfutest.RequireTool(t, "ffprobe"), "-v", "error", "-count_frames", "-show_entries",
		"stream=codec_name,profile,width,height,nb_read_frames", "-of", "csv=p=0", path).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(probe), "h264,Constrained Baseline,320,240,") {
		t.Fatalf("what the viewer got does not decode as H.264 320x240: %v %s", err, probe)
	}

	// The same without ffmpeg.
	d2 := startDaemon(t, "transcode: { ffmpeg: /nonexistent/ffmpeg }\n")
	publishVP8(t, d2.URL+"/whip/cam")
	var refusal error
	sfutest.WaitFor(t, "the publisher's track", 15*time.Second, func() bool {
		_, refusal = playH264(d2.URL+"/whep/cam", viewerAPI)
		return refusal != nil && !strings.Contains(refusal.Error(), "404")
	})
	if !strings.Contains(refusal.Error(), "406") || !strings.Contains(refusal.Error(), `ffmpeg not found at \"/nonexistent/ffmpeg\" (transcode.ffmpeg)`) {
		t.Fatalf("an H.264-only viewer of VP8 without ffmpeg: %v", refusal)
	}
	if !strings.Contains(d2.logs.String(), "transcoding unavailable") {
		t.Errorf("no warning at start about the missing ffmpeg")
	}
	if out, err := d2.cli("status"); err != nil || !strings.Contains(out, "VP8") {
		t.Errorf("the daemon without ffmpeg: %v\n%s", err, out)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// Headless Chromium publishes VP8 only (H.264 disabled); a second Chromium that accepts only
// H.264 plays it, decoding the daemon's transcoded video and the Opus audio as is.
func TestChromiumVP8ToH264(t *testing.T) {
	requireChromium(t)
	sfutest.RequireTool(t, "ffmpeg")
	d := startDaemon(t, "")
	ps := newPageServer(t)
	ps.openPage(t, "publish.html", "pub", url.Values{"whip": {d.URL + "/whip/browser"}, "codec": {"vp8"}})
	pub := ps.waitReport(t, "pub", "frames sent", 30*time.Second, func(r map[string]any) bool {
		return r["state"] == "connected" && num(r, "framesSent") > 30
	})
	if pub["videoCodec"] != "video/VP8" {
		t.Fatalf("the publisher sends %v, want VP8", pub["videoCodec"])
	}
	ps.openPage(t, "play.html", "view", url.Values{"whep": {d.URL + "/whep/browser"}, "codec": {"h264"}})
	first := ps.waitReport(t, "view", "decoded H.264", 45*time.Second, func(r map[string]any) bool {
		return num(r, "framesDecoded") > 60 && num(r, "totalSamplesReceived") > 0
	})
	if first["videoCodec"] != "video/H264" || num(first, "frameWidth") != num(pub, "frameWidth") {
		t.Fatalf("the viewer decodes %v %vpx; want H.264 at the publisher's %vpx", first["videoCodec"], first["frameWidth"], pub["frameWidth"])
	}
	time.Sleep(2 * time.Second)
	later := ps.report("view")
	if num(later, "framesDecoded") <= num(first, "framesDecoded") {
		t.Fatalf("playback stalled: %v then %v", first, later)
	}
}

// ffmpeg as OBS publishes H.264 and an AAC sine over RTMP; headless Chromium plays the room
// over WHEP and decodes both: the video as is, the audio as Opus from the transcoder, with
// samples growing and a non-zero level.
func TestChromiumHearsRTMPAudio(t *testing.T) {
	requireChromium(t)
	d := startDaemon(t, "")
	_, _, _ = ffmpegOBS(t, fmt.Sprintf("rtmp://127.0.0.1:%d/live/obs", d.RTMPPort), 40, 0)
	d.waitPublisher(t, "obs", 2)
	ps := newPageServer(t)
	ps.openPage(t, "play.html", "view", url.Values{"whep": {d.URL + "/whep/obs"}})
	first := ps.waitReport(t, "view", "decoded audio and video", 45*time.Second, func(r map[string]any) bool {
		return num(r, "framesDecoded") > 30 && num(r, "totalSamplesReceived") > 48000 && num(r, "audioLevel") > 0
	})
	if first["audioCodec"] != "audio/opus" || first["videoCodec"] != "video/H264" {
		t.Fatalf("Chromium decodes %v and %v, want H.264 and Opus", first["videoCodec"], first["audioCodec"])
	}
	ps.waitReport(t, "view", "more audio", 10*time.Second, func(r map[string]any) bool {
		return num(r, "totalSamplesReceived") > num(first, "totalSamplesReceived")+48000 && num(r, "audioLevel") > 0 &&
			num(r, "framesDecoded") > num(first, "framesDecoded")+30
	})
	if n := strings.Count(d.logs.String(), "transcoder started"); n != 1 {
		t.Errorf("%d transcoders started for one viewer, want 1", n)
	}
}
