package transcode

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/transport/v4/test"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/rtc"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// daemon is the part of `sluice serve` these tests need, in process and on loopback: hub,
// transcoder, WebRTC engine, WHEP.
type daemon struct {
	hub    *sfu.Hub
	events *sfu.LocalEmitter
	m      *Manager
	srv    *rtc.Server
	http   *httptest.Server
	engine *rtc.Engine
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startDaemon(t *testing.T, m *Manager) *daemon {
	t.Helper()
	hub, em := newHub(t)
	if m != nil {
		hub.SetTranscoder(m)
	}
	engine, err := rtc.NewEngine(rtc.Config{Port: 0, BindIP: "127.0.0.1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	gate := api.NewGate(auth.NewVerifier(auth.Config{}, nil), em)
	srv := rtc.NewServer(engine, hub, gate, nil)
	a := api.New(api.Options{Hub: hub, Gate: gate})
	srv.Register(a)
	d := &daemon{hub: hub, events: em, m: m, srv: srv, engine: engine, http: httptest.NewServer(a.Handler())}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.wg.Add(1)
	go func() { defer d.wg.Done(); _ = srv.Run(ctx) }()
	t.Cleanup(func() {
		// Sessions stop before the transcoder, as in the daemon.
		cancel()
		d.wg.Wait()
		d.http.Close()
		if m != nil {
			m.Close()
		}
		_ = engine.Close()
	})
	return d
}

// clientAPI is a pion stack for test viewers, loopback only.
func clientAPI(t *testing.T) *webrtc.API {
	t.Helper()
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	api, err := rtc.LoopbackAPI(me)
	if err != nil {
		t.Fatal(err)
	}
	return api
}

// viewer is a pion WHEP viewer keeping the audio it receives.
type viewer struct {
	pc      *webrtc.PeerConnection
	session *rtc.Session
	codec   atomic.Value // audio mime type
	mu      sync.Mutex
	audio   [][]byte
	at      []time.Time
	readers sync.WaitGroup
}

func play(t *testing.T, api *webrtc.API, endpoint string) *viewer {
	t.Helper()
	v, err := tryPlay(api, endpoint)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func tryPlay(api *webrtc.API, endpoint string) (*viewer, error) {
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, err
	}
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			_ = pc.Close()
			return nil, err
		}
	}
	v := &viewer{pc: pc}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		v.readers.Add(1)
		defer v.readers.Done()
		if tr.Kind() == webrtc.RTPCodecTypeAudio {
			v.codec.Store(tr.Codec().MimeType)
		}
		for {
			pkt, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			if tr.Kind() == webrtc.RTPCodecTypeAudio {
				v.mu.Lock()
				v.audio = append(v.audio, pkt.Payload)
				v.at = append(v.at, time.Now())
				v.mu.Unlock()
			}
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

func (v *viewer) packets() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.audio)
}

// firstAfter returns when the first audio packet after t arrived.
func (v *viewer) firstAfter(t time.Time) (time.Time, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, at := range v.at {
		if at.After(t) {
			return at, true
		}
	}
	return time.Time{}, false
}

func (v *viewer) close() {
	_ = v.session.Close(context.Background())
	_ = v.pc.Close()
	v.readers.Wait()
}

// Ten WHEP viewers of one AAC stream receive Opus from one shared ffmpeg, which stops when the
// last one leaves; the Opus a viewer received decodes to audio of the right length.
func TestWHEPViewersShareOneTranscoder(t *testing.T) {
	t.Cleanup(test.CheckRoutines(t))
	var logs sfutest.Buffer
	d := startDaemon(t, newManager(t, newTestLogger(&logs), nil))
	startAACSource(t, d.hub, "studio", "obs", toneADTS(t, 48000, 4))
	client := clientAPI(t)

	const n = 10
	viewers := make([]*viewer, n)
	for i := range viewers {
		viewers[i] = play(t, client, d.http.URL+"/whep/studio/obs")
	}
	sfutest.WaitFor(t, "every viewer receiving Opus", 30*time.Second, func() bool {
		for _, v := range viewers {
			if v.packets() < 100 { // 2 s
				return false
			}
		}
		return true
	})
	if pids := ffmpegChildren(t); len(pids) != 1 {
		t.Fatalf("%d ffmpeg processes for %d viewers of one stream, want 1: %v", len(pids), n, pids)
	}
	st := d.m.Status()
	if len(st) != 1 || st[0].Readers != n || st[0].Subscribers != n || st[0].From != "aac" || st[0].To != "opus" || st[0].PID == 0 {
		t.Fatalf("status %+v", st)
	}
	if mime, _ := viewers[0].codec.Load().(string); !strings.EqualFold(mime, webrtc.MimeTypeOpus) {
		t.Fatalf("the viewer receives %q", mime)
	}

	// What a viewer received is audio: as an Ogg file, ffmpeg decodes it to as many samples.
	viewers[0].mu.Lock()
	payloads := append([][]byte(nil), viewers[0].audio...)
	viewers[0].mu.Unlock()
	ogg := filepath.Join(t.TempDir(), "viewer.ogg")
	if err := writeOggOpus(ogg, payloads, 2); err != nil {
		t.Fatal(err)
	}
	pcm := decodeMono(t, ogg)
	if got, want := float64(len(pcm))/48000, float64(len(payloads))*0.02; got < want*0.95 || got < 1.9 {
		t.Fatalf("decoded %.2f s of audio from %d packets (%.2f s)", got, len(payloads), want)
	}
	if len(onsets(pcm)) < 1 {
		t.Fatal("the decoded audio has no tone in it")
	}

	for _, v := range viewers {
		v.close()
	}
	sfutest.WaitFor(t, "ffmpeg to stop after the last viewer", 10*time.Second, func() bool {
		return len(ffmpegChildren(t)) == 0 && len(d.m.Status()) == 0
	})
	if !strings.Contains(logs.String(), "transcoder stopped") {
		t.Errorf("no log line for the stop:\n%s", logs.String())
	}
}

// Killing ffmpeg mid-stream: the supervisor restarts it, viewers get audio again within 3 s,
// and a log line and the restart counter record it.
func TestKilledFFmpegIsRestarted(t *testing.T) {
	t.Cleanup(test.CheckRoutines(t))
	var logs sfutest.Buffer
	d := startDaemon(t, newManager(t, newTestLogger(&logs), nil))
	src := startAACSource(t, d.hub, "studio", "obs", toneADTS(t, 48000, 4))
	_ = src
	client := clientAPI(t)
	v := play(t, client, d.http.URL+"/whep/studio/obs")
	sfutest.WaitFor(t, "Opus", 30*time.Second, func() bool { return v.packets() > 50 })
	pids := d.m.PIDs()
	if len(pids) != 1 {
		t.Fatalf("pids %v", pids)
	}
	killedAt := time.Now()
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Wait until the stream stopped (the last packets before the kill arrive) and came back.
	var back time.Time
	sfutest.WaitFor(t, "audio after the restart", 15*time.Second, func() bool {
		at, ok := v.firstAfter(killedAt.Add(200 * time.Millisecond))
		if !ok {
			return false
		}
		back = at
		newPIDs := d.m.PIDs()
		return len(newPIDs) == 1 && newPIDs[0] != pids[0]
	})
	gap := back.Sub(killedAt)
	t.Logf("audio resumed %v after the kill", gap.Round(time.Millisecond))
	if gap > 3*time.Second {
		t.Errorf("audio resumed %v after the kill, want within 3 s", gap)
	}
	before := v.packets()
	sfutest.WaitFor(t, "audio flowing after the restart", 10*time.Second, func() bool { return v.packets() > before+50 })
	if !strings.Contains(logs.String(), `msg="transcoder restarted"`) || !strings.Contains(logs.String(), "signal: killed") {
		t.Errorf("no log line records the restart:\n%s", logs.String())
	}
	if st := d.m.Status(); len(st) != 1 || st[0].Restarts != 1 {
		t.Errorf("status after the restart %+v", st)
	}
	if d.m.restarts.Load() != 1 {
		t.Errorf("restart counter %d", d.m.restarts.Load())
	}
	v.close()
}

// Without ffmpeg the daemon still serves: a viewer gets what needs no conversion, and the
// subscription that needs one fails naming the missing transcoder; an AAC-only source is
// refused with the same reason.
func TestWHEPWithoutFFmpeg(t *testing.T) {
	t.Cleanup(test.CheckRoutines(t))
	m := newManager(t, nil, func(o *Options) { o.Config.FFmpeg = "/nonexistent/ffmpeg" })
	d := startDaemon(t, m)
	startAACSource(t, d.hub, "studio", "obs", toneADTS(t, 48000, 2))
	client := clientAPI(t)
	_, err := tryPlay(client, d.http.URL+"/whep/studio/obs")
	if err == nil || !strings.Contains(err.Error(), "406") || !strings.Contains(err.Error(), `ffmpeg not found at \"/nonexistent/ffmpeg\"`) {
		t.Fatalf("playing AAC without ffmpeg: %v", err)
	}
	var failed []sfu.Event
	for _, e := range d.events.Events(0) {
		if e.Type == sfu.EventTrackSubscriptionFailed {
			failed = append(failed, e)
		}
	}
	if len(failed) != 1 || failed[0].Error.Code != "transcoder_unavailable" ||
		!strings.Contains(failed[0].Error.Message, `no transcoder: ffmpeg not found at "/nonexistent/ffmpeg" (transcode.ffmpeg)`) {
		t.Fatalf("track.subscription_failed events %+v", failed)
	}
	if len(ffmpegChildren(t)) != 0 {
		t.Fatal("an ffmpeg runs")
	}

	disabled := newManager(t, nil, func(o *Options) { o.Config.Enabled = false })
	if _, _, err := disabled.Transcode(d.hub.Room("studio").Participant("obs").Tracks()[0], sfu.CodecOpus); err == nil ||
		!strings.Contains(err.Error(), "transcoding is disabled (transcode.enabled: false)") {
		t.Fatalf("disabled: %v", err)
	}
}
