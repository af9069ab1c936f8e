package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"github.com/pion/webrtc/v4/pkg/media/h264reader"
	"github.com/pion/webrtc/v4/pkg/media/oggreader"

	"github.com/sluice-media/sluice/egress/egresstest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/rtc"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// mediaPublisher is a pion WHIP publisher of real H.264 (constrained baseline, a keyframe a
// second) and Opus made by ffmpeg, sent once in real time, like a browser.
type mediaPublisher struct {
	pc      *webrtc.PeerConnection
	session *rtc.Session
	stop    chan struct{}
	wg      sync.WaitGroup
	sent    chan struct{} // closed when every frame was sent
	once    sync.Once
}

func publishH264Opus(t *testing.T, endpoint string, seconds int) *mediaPublisher {
	t.Helper()
	ffmpeg := sfutest.RequireTool(t, "ffmpeg")
	dir := t.TempDir()
	h264Path, oggPath := filepath.Join(dir, "v.h264"), filepath.Join(dir, "a.ogg")
	dur := strconv.Itoa(seconds)
	if out, err := exec.Command(ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30:duration="+dur,
		"-c:v", "libx264", "-profile:v", "baseline", "-preset", "veryfast", "-bf", "0", "-g", "30", "-pix_fmt", "yuv420p",
		"-b:v", "800k", "-f", "h264", h264Path).CombinedOutput(); err != nil {
		t.Fatalf("making H.264: %v\n%s", err, out)
	}
	if out, err := exec.Command(ffmpeg, "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration="+dur,
		"-c:a", "libopus", "-b:a", "64k", "-frame_duration", "20", "-ac", "2", "-page_duration", "20000", "-f", "ogg", oggPath).CombinedOutput(); err != nil {
		t.Fatalf("making Opus: %v\n%s", err, out)
	}
	frames := readH264AccessUnits(t, h264Path)
	packets := readOggPackets(t, oggPath)

	m := &webrtc.MediaEngine{}
	for _, c := range h264Only {
		if err := m.RegisterCodec(c, webrtc.RTPCodecTypeVideo); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus,
		ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}, PayloadType: 111}, webrtc.RTPCodecTypeAudio); err != nil {
		t.Fatal(err)
	}
	api, err := rtc.LoopbackAPI(m)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	video, _ := webrtc.NewTrackLocalStaticSample(h264Only[0].RTPCodecCapability, "video", "cam")
	audio, _ := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "cam")
	p := &mediaPublisher{pc: pc, stop: make(chan struct{}), sent: make(chan struct{})}
	for _, tr := range []webrtc.TrackLocal{video, audio} {
		sender, err := pc.AddTrack(tr)
		if err != nil {
			t.Fatal(err)
		}
		p.wg.Add(1)
		go func() { // drain RTCP; ends when pc closes
			defer p.wg.Done()
			for {
				if _, _, err := sender.ReadRTCP(); err != nil {
					return
				}
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if p.session, err = rtc.Negotiate(ctx, endpoint, "", pc); err != nil {
		_ = pc.Close()
		p.wg.Wait()
		t.Fatal(err)
	}
	var sending sync.WaitGroup
	sending.Add(2)
	p.wg.Add(3)
	go func() {
		defer p.wg.Done()
		sending.Wait()
		close(p.sent)
	}()
	pace := func(n int, period time.Duration, write func(i int)) {
		defer p.wg.Done()
		defer sending.Done()
		start := time.Now()
		for i := range n {
			select {
			case <-p.stop:
				return
			case <-time.After(time.Until(start.Add(time.Duration(i) * period))):
			}
			write(i)
		}
	}
	go pace(len(frames), time.Second/30, func(i int) {
		_ = video.WriteSample(media.Sample{Data: frames[i], Duration: time.Second / 30})
	})
	go pace(len(packets), 20*time.Millisecond, func(i int) {
		_ = audio.WriteSample(media.Sample{Data: packets[i], Duration: 20 * time.Millisecond})
	})
	t.Cleanup(p.close)
	return p
}

func (p *mediaPublisher) close() {
	p.once.Do(func() {
		close(p.stop)
		_ = p.session.Close(context.Background())
		_ = p.pc.Close()
		p.wg.Wait()
	})
}

// readH264AccessUnits splits an Annex-B file into access units (Annex-B again), one per
// picture.
func readH264AccessUnits(t *testing.T, path string) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := h264reader.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var aus [][]byte
	var cur []byte
	for {
		nal, err := r.NextNAL()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		cur = append(cur, 0, 0, 0, 1)
		cur = append(cur, nal.Data...)
		if nal.UnitType == h264reader.NalUnitTypeCodedSliceNonIdr || nal.UnitType == h264reader.NalUnitTypeCodedSliceIdr {
			aus = append(aus, cur)
			cur = nil
		}
	}
	if len(aus) == 0 {
		t.Fatal("no H.264 access units")
	}
	return aus
}

// readOggPackets returns the Opus packets of an Ogg file (one per page payload, as ffmpeg
// writes 20 ms frames).
func readOggPackets(t *testing.T, path string) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, _, err := oggreader.NewWith(f)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for {
		page, hdr, err := r.ParseNextPage()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.GranulePosition == 0 { // OpusHead, OpusTags
			continue
		}
		out = append(out, page)
	}
	if len(out) == 0 {
		t.Fatal("no Opus packets")
	}
	return out
}

// TestBroadcastWHIPOpusAsAAC: a WHIP publisher with H.264 + Opus is broadcast; the Opus goes
// through the transcoder, and the platform's file holds decodable H.264 and AAC.
func TestBroadcastWHIPOpusAsAAC(t *testing.T) {
	platform := egresstest.StartPlatform(t, egresstest.PlatformOptions{})
	d := startDaemon(t, broadcastYAML)
	b := startBroadcast(t, d, "--room", "call", "--url", platform.URL(keyMain))
	const seconds = 10
	pub := publishH264Opus(t, d.URL+"/whip/call", seconds)
	waitEvent(t, d, sfu.EventBroadcastStarted, 1, 30*time.Second)
	select {
	case <-pub.sent:
	case <-time.After(60 * time.Second):
		t.Fatal("the publisher did not finish")
	}
	pub.close()
	sfutest.WaitFor(t, "broadcast ended by its source", 30*time.Second, func() bool { return showBroadcast(t, d, b.ID).Status == "complete" })
	platform.Stop()
	files := platform.Recordings()
	if len(files) != 1 {
		t.Fatalf("platform files %v, want 1", files)
	}
	p := egresstest.ProbeFile(t, files[0])
	t.Logf("platform file: %+v", p)
	if p.Video != "h264" || p.Audio != "aac" || p.SampleRate != 48000 {
		t.Errorf("platform file %+v, want h264 + aac 48 kHz", p)
	}
	if p.Duration < seconds*0.8 || p.Duration > seconds*1.1 {
		t.Errorf("duration %.2f s of %d s published", p.Duration, seconds)
	}
	assertNoKeys(t, d, keyMain)
}

// TestBroadcastVP8AsH264: a VP8-only WHIP publisher is broadcast; the platform's file holds
// decodable H.264 made by the transcoder.
func TestBroadcastVP8AsH264(t *testing.T) {
	platform := egresstest.StartPlatform(t, egresstest.PlatformOptions{})
	d := startDaemon(t, broadcastYAML)
	publishVP8(t, d.URL+"/whip/call")
	b := startBroadcast(t, d, "--room", "call", "--url", platform.URL(keyMain))
	waitEvent(t, d, sfu.EventBroadcastStarted, 1, 30*time.Second)
	time.Sleep(6 * time.Second) // media on the platform
	if out, err := d.cli("broadcast", "stop", b.ID); err != nil {
		t.Fatalf("broadcast stop: %v\n%s", err, out)
	}
	platform.Stop()
	files := platform.Recordings()
	if len(files) != 1 {
		t.Fatalf("platform files %v, want 1", files)
	}
	p := egresstest.ProbeFile(t, files[0])
	t.Logf("platform file: %+v", p)
	if p.Video != "h264" || p.Width != 320 || p.Height != 240 || p.Duration < 3 {
		t.Errorf("platform file %+v, want about 6 s of 320x240 H.264", p)
	}
}

// TestBroadcastWithoutTranscoder: with transcoding off, an Opus source cannot be broadcast:
// the start fails with an error naming the missing transcoder, and broadcast.failed says so.
func TestBroadcastWithoutTranscoder(t *testing.T) {
	d := startDaemon(t, broadcastYAML+"transcode: { enabled: false }\n")
	pub := newWHIPPublisher(t, d.URL+"/whip/call")
	defer pub.close()
	sfutest.WaitFor(t, "publisher in the room", 20*time.Second, func() bool {
		out, _ := d.cli("rooms", "show", "call", "-o", "json")
		return strings.Contains(out, "opus")
	})
	out, err := d.cli("broadcast", "start", "--room", "call", "--url", fmt.Sprintf("rtmp://127.0.0.1:%d/live/%s", sfutest.FreeTCPPort(t), keyMain))
	if err == nil || !strings.Contains(out, "transcod") {
		t.Fatalf("broadcast start without a transcoder: err %v\n%s", err, out)
	}
	evs := broadcastEvents(t, d)
	if len(evs) != 1 || evs[0].Type != sfu.EventBroadcastFailed || evs[0].Error == nil || evs[0].Error.Code != "no_transcoder" {
		t.Fatalf("events %+v", evs)
	}
	t.Logf("refused: %s", strings.TrimSpace(out))
	assertNoKeys(t, d, keyMain)
}
