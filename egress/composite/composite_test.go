package composite

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-media/sluice/recorder/rectest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// testPublisher is an ffmpeg test source (a plain colour and a sine tone, H.264 and AAC in
// MPEG-TS) published into a room as one participant.
type testPublisher struct {
	p      *sfu.Participant
	cancel context.CancelFunc
	done   chan struct{}
}

// publishSource joins room as identity and publishes ffmpeg's colour picture and tone; volume
// is an ffmpeg volume expression (of t, in seconds).
func publishSource(t *testing.T, hub *sfu.Hub, room, identity, colour string, freq int, volume string) *testPublisher {
	t.Helper()
	ffmpeg := sfutest.RequireTool(t, "ffmpeg")
	p, err := hub.Join(room, sfu.ParticipantSpec{Identity: identity, Kind: sfu.ParticipantRTMP})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, ffmpeg, "-hide_banner", "-loglevel", "error", "-re",
		"-f", "lavfi", "-i", "color=c="+colour+":s=320x180:r=15",
		"-f", "lavfi", "-i", fmt.Sprintf("sine=f=%d:r=48000", freq),
		"-af", "volume='"+volume+"':eval=frame",
		"-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-profile:v", "baseline", "-g", "15",
		"-c:a", "aac", "-b:a", "64k", "-f", "mpegts", "-muxdelay", "0", "-pes_payload_size", "0", "-flush_packets", "1", "pipe:1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tp := &testPublisher{p: p, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(tp.done)
		out := &output{self: p}
		_ = readTS(bufio.NewReader(stdout), 0, out, func() {})
		_ = cmd.Wait()
	}()
	t.Cleanup(tp.leave)
	return tp
}

func (tp *testPublisher) leave() {
	tp.cancel()
	<-tp.done
	tp.p.Close(sfu.ReasonClientDisconnected, nil)
}

// watcher decodes the composite's tracks back to pictures and samples.
type watcher struct {
	mu      sync.Mutex
	pic     *frame
	samples []int16 // mono: the left channel
	subs    []*sfu.Subscription
	decs    []*decoder
}

func watch(t testing.TB, hub *sfu.Hub, room string, w, h int) *watcher {
	t.Helper()
	var self *sfu.Participant
	sfutest.WaitFor(t, "the composite's two tracks", 20*time.Second, func() bool {
		if r := hub.Room(room); r != nil {
			self = r.Participant(Identity)
		}
		return self != nil && len(self.Tracks()) == 2
	})
	wt := &watcher{}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	for _, tr := range self.Tracks() {
		d := &decoder{kind: tr.Kind(), ffmpeg: "ffmpeg", log: log, w: w, h: h}
		if tr.Kind() == sfu.KindVideo {
			d.onPicture = func(f *frame) *frame {
				wt.mu.Lock()
				defer wt.mu.Unlock()
				if wt.pic == nil {
					wt.pic = newFrame(f.w, f.h)
				}
				copy(wt.pic.buf, f.buf)
				return f
			}
		} else {
			d.onSamples = func(b []byte) {
				wt.mu.Lock()
				defer wt.mu.Unlock()
				for i := 0; i+1 < len(b); i += 2 {
					wt.samples = append(wt.samples, int16(uint16(b[i])|uint16(b[i+1])<<8))
				}
			}
		}
		d.switched(tr)
		sub, err := tr.Subscribe(d, sfu.SubscribeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tr.RequestKeyframe()
		wt.subs, wt.decs = append(wt.subs, sub), append(wt.decs, d)
	}
	t.Cleanup(func() {
		for _, d := range wt.decs {
			d.close()
		}
		for _, s := range wt.subs {
			s.Close()
		}
	})
	return wt
}

// colourAt names the colour around (x, y) of the latest picture: red, green, blue, or "".
func (wt *watcher) colourAt(x, y int) string {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	if wt.pic == nil {
		return ""
	}
	f := wt.pic
	_, cb, cr := f.planes()
	var sb, sr, n int
	for j := y/2 - 4; j < y/2+4; j++ {
		for i := x/2 - 4; i < x/2+4; i++ {
			sb += int(cb[j*f.w/2+i])
			sr += int(cr[j*f.w/2+i])
			n++
		}
	}
	b, r := sb/n, sr/n
	switch {
	case r > 180 && b < 128:
		return "red"
	case r < 100 && b < 100:
		return "green"
	case b > 180 && r < 140:
		return "blue"
	}
	return fmt.Sprintf("cb=%d cr=%d", b, r)
}

// tones returns the power of each frequency in the last second of audio, relative to the
// whole signal's.
func (wt *watcher) tones(freqs ...float64) []float64 {
	wt.mu.Lock()
	s := wt.samples[max(0, len(wt.samples)-sampleRate):]
	wt.mu.Unlock()
	var total float64
	for _, v := range s {
		total += float64(v) * float64(v)
	}
	out := make([]float64, len(freqs))
	if total == 0 {
		return out
	}
	for i, f := range freqs {
		out[i] = goertzel(s, f) / (total * float64(len(s)) / 2)
	}
	return out
}

// goertzel is the power of one frequency in s.
func goertzel(s []int16, freq float64) float64 {
	w := 2 * math.Pi * freq / sampleRate
	coeff := 2 * math.Cos(w)
	var q1, q2 float64
	for _, v := range s {
		q0 := coeff*q1 - q2 + float64(v)
		q2, q1 = q1, q0
	}
	return q1*q1 + q2*q2 - coeff*q1*q2
}

func testManager(t *testing.T) (*sfu.Hub, *Manager) {
	t.Helper()
	sfutest.RequireTool(t, "ffmpeg")
	hub, _ := sfutest.NewHub(t, nil)
	sfutest.RunHub(t, hub)
	m := NewManager(hub, Config{Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	t.Cleanup(m.Close)
	return hub, m
}

// Three participants in a grid: each colour in its tile, each tone in the mix; one leaves and
// the grid re-tiles to two.
func TestGridTilesAndMix(t *testing.T) {
	hub, m := testManager(t)
	const w, h = 640, 360
	red := publishSource(t, hub, "show", "a-red", "red", 440, "1")
	publishSource(t, hub, "show", "b-green", "green", 660, "1")
	publishSource(t, hub, "show", "c-blue", "blue", 880, "1")
	c, release, err := m.Acquire(Spec{Room: "show", Layout: LayoutGrid, Width: w, Height: h, FPS: 15, BitrateKbps: 800})
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	wt := watch(t, hub, "show", w, h)
	// Three in a 2×2 grid: two on top, the third centred below, in order of arrival.
	want := map[[2]int]string{{160, 90}: "red", {480, 90}: "green", {320, 270}: "blue"}
	waitColours(t, wt, want, 20*time.Second)
	if got := c.Info().Participants; len(got) != 3 {
		t.Fatalf("participants %v", got)
	}
	deadline := time.Now().Add(10 * time.Second)
	for p := wt.tones(440, 660, 880, 550); !(p[0] > 0.1 && p[1] > 0.1 && p[2] > 0.1 && p[3] < 0.01); p = wt.tones(440, 660, 880, 550) {
		if time.Now().After(deadline) {
			wt.mu.Lock()
			n := len(wt.samples)
			wt.mu.Unlock()
			c.mu.Lock()
			for id, in := range c.inputs {
				in.pcm.mu.Lock()
				t.Logf("%s: %d underruns, %d samples dropped, %d waiting", id, in.pcm.underruns, in.pcm.overruns, in.pcm.n)
				in.pcm.mu.Unlock()
			}
			c.mu.Unlock()
			t.Fatalf("the mix lacks a tone: 440/660/880/550 Hz at %.3f of its power (%d samples decoded)", p, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("tones 440/660/880/550 Hz: %.3f", wt.tones(440, 660, 880, 550))

	changed := c.Changed()
	red.leave()
	start := time.Now()
	waitColours(t, wt, map[[2]int]string{{160, 180}: "green", {480, 180}: "blue"}, 5*time.Second)
	t.Logf("re-tiled in %v", time.Since(start).Round(10*time.Millisecond))
	select {
	case <-changed:
	default:
		t.Error("the composite's Changed did not fire when a participant left")
	}
	if got := c.Info().Participants; len(got) != 2 {
		t.Fatalf("participants after a leave: %v", got)
	}
	// Switched by the API to single, on one participant, then the other: the whole picture.
	for _, who := range []struct{ id, colour string }{{"c-blue", "blue"}, {"b-green", "green"}} {
		if err := c.SetLayout(LayoutSingle, who.id); err != nil {
			t.Fatal(err)
		}
		waitColours(t, wt, map[[2]int]string{{40, 40}: who.colour, {320, 180}: who.colour, {600, 320}: who.colour}, 5*time.Second)
	}
	if err := c.SetLayout("mosaic", ""); err == nil {
		t.Error("an unknown layout was taken")
	}
}

func waitColours(t testing.TB, wt *watcher, want map[[2]int]string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok := true
		got := map[[2]int]string{}
		for at, c := range want {
			got[at] = wt.colourAt(at[0], at[1])
			ok = ok && got[at] == c
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("want colours %v, have %v", want, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// In speaker, the loud participant is the large tile, and the tile follows when the other gets
// loud (its ffmpeg raises its volume 12 s in).
func TestSpeakerFollowsLoudParticipant(t *testing.T) {
	hub, m := testManager(t)
	const w, h = 640, 360
	started := time.Now()
	publishSource(t, hub, "talk", "a-red", "red", 440, "if(lt(t,12),1,0.03)")
	publishSource(t, hub, "talk", "b-green", "green", 660, "if(lt(t,12),0.03,1)")
	c, release, err := m.Acquire(Spec{Room: "talk", Layout: LayoutSpeaker, Width: w, Height: h, FPS: 15, BitrateKbps: 800})
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	wt := watch(t, hub, "talk", w, h)
	big := [2]int{320, 135} // the centre of the large tile (the strip is the bottom quarter)
	waitColours(t, wt, map[[2]int]string{big: "red"}, 15*time.Second)
	if s := c.Info().Speaker; s != "a-red" {
		t.Fatalf("speaker %q while a-red is the loud one", s)
	}
	change := started.Add(12 * time.Second)
	t.Logf("the first speaker shown %v after the publishers started", time.Since(started).Round(10*time.Millisecond))
	if time.Now().After(change) {
		t.Fatalf("the composite took more than 12 s to show the first speaker")
	}
	waitColours(t, wt, map[[2]int]string{big: "green"}, time.Until(change)+4*time.Second)
	lag := time.Since(change)
	t.Logf("the large tile followed the new speaker %v after the change", lag.Round(10*time.Millisecond))
	if lag > 2*time.Second {
		t.Errorf("the speaker tile followed after %v, want within 2 s", lag)
	}
	if s := c.Info().Speaker; s != "b-green" {
		t.Errorf("speaker %q after b-green got loud", s)
	}
}

// A composite with nobody to show ends after its empty timeout: its participant leaves, so
// what follows it sees the source go; the next Acquire starts another.
func TestEmptyRoomEndsComposite(t *testing.T) {
	sfutest.RequireTool(t, "ffmpeg")
	hub, _ := sfutest.NewHub(t, nil)
	sfutest.RunHub(t, hub)
	m := NewManager(hub, Config{EmptyTimeout: 300 * time.Millisecond})
	t.Cleanup(m.Close)
	c, release, err := m.Acquire(Spec{Room: "empty", Width: 320, Height: 180, FPS: 10, BitrateKbps: 200})
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the composite of an empty room did not end")
	}
	if p := hub.Room("empty"); p != nil && p.Participant(Identity) != nil {
		t.Error("the composite participant is still in the room")
	}
	c2, release2, err := m.Acquire(Spec{Room: "empty", Width: 320, Height: 180, FPS: 10, BitrateKbps: 200})
	if err != nil {
		t.Fatal(err)
	}
	defer release2()
	if c2 == c {
		t.Error("Acquire returned the composite that had ended")
	}
	if _, _, err := m.Acquire(Spec{Room: "empty", Width: 640, Height: 360, FPS: 10, BitrateKbps: 200}); err == nil {
		t.Error("a second holder with another size was accepted")
	}
}

// A participant with G.711 audio and no video is heard in the mix and has a tile with its name.
func TestG711AudioOnlyParticipant(t *testing.T) {
	hub, m := testManager(t)
	const w, h = 640, 360
	p, err := hub.Join("call", sfu.ParticipantSpec{Identity: "phone", Name: "Phone caller", Kind: sfu.ParticipantRTSP})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(sfu.ReasonClientDisconnected, nil)
	src := rectest.PCMU(t, 20)
	tr, err := p.Publish(sfu.TrackSpec{Codec: src.Codec, Name: "audio"})
	if err != nil {
		t.Fatal(err)
	}
	wr, err := media.NewWriter(tr)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	fed := make(chan struct{})
	go func() { // paced as a phone sends: 20 ms a packet
		defer close(fed)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for _, s := range src.Samples {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			_ = wr.Write(uint32(s.PTS), [][]byte{s.Data})
		}
	}()
	defer func() { close(stop); <-fed }()
	_, release, err := m.Acquire(Spec{Room: "call", Layout: LayoutGrid, Width: w, Height: h, FPS: 15, BitrateKbps: 500})
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	wt := watch(t, hub, "call", w, h)
	deadline := time.Now().Add(15 * time.Second)
	for p := wt.tones(500, 700); p[0] < 0.3 || p[1] > 0.01; p = wt.tones(500, 700) {
		if time.Now().After(deadline) {
			t.Fatalf("the 500 Hz tone of the G.711 participant is not in the mix: 500/700 Hz at %.3f", p)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// One tile, the whole picture, in the tile colour, with a bright label at its bottom left.
	sfutest.WaitFor(t, "a picture", 10*time.Second, func() bool {
		wt.mu.Lock()
		defer wt.mu.Unlock()
		return wt.pic != nil
	})
	wt.mu.Lock()
	defer wt.mu.Unlock()
	y, _, _ := wt.pic.planes()
	if v := y[h/2*w+w/2]; v < 25 || v > 60 {
		t.Errorf("the name tile's luma is %d, want about %d", v, tileColour[0])
	}
	bright := 0
	for j := h - 18; j < h; j++ {
		for i := range 120 {
			if y[j*w+i] > 150 {
				bright++
			}
		}
	}
	if bright < 30 {
		t.Errorf("no name label at the tile's bottom left (%d bright pixels)", bright)
	}
}

// A killed encoder is restarted: the composite's tracks go on with increasing timestamps, its
// Info counts the restart and Changed fires (the holders' updated event).
func TestEncoderCrashRestarts(t *testing.T) {
	hub, m := testManager(t)
	publishSource(t, hub, "crash", "a-red", "red", 440, "1")
	c, release, err := m.Acquire(Spec{Room: "crash", Width: 320, Height: 180, FPS: 15, BitrateKbps: 300})
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	var self *sfu.Participant
	sfutest.WaitFor(t, "the composite's video", 20*time.Second, func() bool {
		self = hub.Room("crash").Participant(Identity)
		return self != nil && len(self.Tracks()) == 2
	})
	var video *sfu.Track
	for _, tr := range self.Tracks() {
		if tr.Kind() == sfu.KindVideo {
			video = tr
		}
	}
	var mu sync.Mutex
	var ts []int64
	var unwrap media.Unwrapper
	sub, err := video.Subscribe(sfu.SinkFunc(func(p *sfu.Packet, _ bool) error {
		mu.Lock()
		defer mu.Unlock()
		ts = append(ts, unwrap.Unwrap(p.Header.Timestamp))
		return nil
	}), sfu.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	time.Sleep(2 * time.Second)
	changed := c.Changed()
	pid := int(c.encPID.Load())
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("Changed did not fire for the restart")
	}
	if n := c.Info().Restarts; n != 1 {
		t.Errorf("restarts %d, want 1", n)
	}
	mu.Lock()
	before := len(ts)
	mu.Unlock()
	sfutest.WaitFor(t, "video after the restart", 15*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(ts) > before+30 && int(c.encPID.Load()) != pid
	})
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(ts); i++ {
		if ts[i] < ts[i-1] {
			t.Fatalf("the video's timestamps went back across the restart: %d after %d", ts[i], ts[i-1])
		}
	}
	if got, want := ChangeReason(Info{}, c.Info()), ReasonCompositorRestarted; got != want {
		t.Errorf("reason %q, want %q", got, want)
	}
}
