package rtsp

import (
	"context"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/pion/rtp"
	"github.com/pion/transport/v4/test"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/ingest/rtsp/rtsptest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// dialRecorder records when the puller connects to one address (the camera's).
type dialRecorder struct {
	addr  string
	mu    sync.Mutex
	times []time.Time
}

func (d *dialRecorder) dial(ctx context.Context, network, address string) (net.Conn, error) {
	if address == d.addr {
		d.mu.Lock()
		d.times = append(d.times, time.Now())
		d.mu.Unlock()
	}
	return (&net.Dialer{}).DialContext(ctx, network, address)
}

func (d *dialRecorder) since(t0 time.Time) []time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []time.Time
	for _, t := range d.times {
		if !t.Before(t0) {
			out = append(out, t)
		}
	}
	return out
}

// connected waits until the ingest is connected and returns its participant.
func (h *harness) connected(ing ingest.Ingest, since uint64) *sfu.Participant {
	h.t.Helper()
	h.waitEvent("the camera connected", since, 20*time.Second, stateChanged(ing.ID, ingest.StateConnected))
	p := h.participant(ing.Room, ing.ID)
	if p == nil {
		h.t.Fatal("the camera is connected but not in its room")
	}
	return p
}

func trackOf(p *sfu.Participant, kind sfu.Kind) *sfu.Track {
	for _, t := range p.Tracks() {
		if t.Kind() == kind {
			return t
		}
	}
	return nil
}

// A camera emulator (H.264 with parameter sets only in the SDP, big packets, G.711 µ-law,
// digest auth) is pulled: it joins its room as rtsp_pull with the ingest's id as identity, its
// tracks carry the SDP's parameter sets before the first keyframe and fit the MTU, and a pion
// WHEP viewer receives its video from a keyframe on, and its audio.
func TestCameraPulledToWHEPViewer(t *testing.T) {
	t.Cleanup(test.CheckRoutines(t)) // runs last: after every other cleanup
	e := rtsptest.NewCamera(t, rtsptest.CameraOptions{User: "admin", Pass: "s3cret-pw"})
	h := newHarness(t, harnessOptions{})
	ing := h.pull(e.URL("admin", "s3cret-pw"), "auto")
	p := h.connected(ing, 0)
	if p.Kind() != sfu.ParticipantRTSPPull {
		t.Errorf("participant kind %q", p.Kind())
	}
	video, audio := trackOf(p, sfu.KindVideo), trackOf(p, sfu.KindAudio)
	if video == nil || audio == nil {
		t.Fatalf("tracks %v", p.Tracks())
	}
	if c := video.Codec(); c.Name != sfu.CodecH264 || !strings.Contains(c.Fmtp, "sprop-parameter-sets=") {
		t.Errorf("video codec %+v", c)
	}
	if w, hh := video.Size(); w != 320 || hh != 240 {
		t.Errorf("video size %dx%d", w, hh)
	}
	if c := audio.Codec(); c.Name != sfu.CodecPCMU || c.ClockRate != 8000 {
		t.Errorf("audio codec %+v", c)
	}

	sink := &packetSink{}
	sub, err := video.Subscribe(sink, sfu.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	sfutest.WaitFor(t, "video packets", 10*time.Second, func() bool { return len(sink.all()) > 100 })
	pkts := sink.all()
	if !pkts[0].Keyframe {
		t.Error("the first packet of a new subscriber is not a keyframe")
	}
	if _, _, ok := sfu.VideoSize(sfu.CodecH264, pkts[0].Payload); !ok {
		t.Error("the keyframe does not start with the SDP's SPS (the camera sends none in-band)")
	}
	for _, pk := range pkts {
		if len(pk.Payload) > media.MaxPayload {
			t.Fatalf("a %d-byte payload passed the %d-byte MTU budget", len(pk.Payload), media.MaxPayload)
		}
	}
	if _, ok := video.SenderReport(); !ok {
		t.Error("the video track has no sender report to align recordings")
	}

	v := playWHEP(t, h.http.URL+"/whep/cams")
	sfutest.WaitFor(t, "WHEP video and audio", 15*time.Second, func() bool { return v.video.Load() > 100 && v.audio.Load() > 50 })
	if v.firstKeyframe.Load() != 1 {
		t.Error("the viewer's first video packet is not a keyframe")
	}
	if !v.maxPayloadOK() {
		t.Errorf("the viewer got a %d-byte payload", v.maxPayload.Load())
	}
	if v.videoMime.Load() != "video/H264" || v.audioMime.Load() != "audio/PCMU" {
		t.Errorf("viewer codecs %v %v", v.videoMime.Load(), v.audioMime.Load())
	}

	var got []string
	for _, ev := range h.events.Events(0) {
		if ev.Type == sfu.EventIngestStateChanged || (ev.Participant != nil && ev.Participant.Kind == sfu.ParticipantRTSPPull) {
			got = append(got, ev.Type+":"+ev.PrevState)
		}
	}
	want := []string{"ingest.state_changed:idle", "participant.joined:", "track.published:", "track.published:",
		"stream.publishing:", "ingest.state_changed:connecting"}
	if len(got) < len(want) || !slices.Equal(got[:len(want)], want) {
		t.Errorf("events %v, want %v first", got, want)
	}
	if strings.Contains(h.logs.String(), "s3cret-pw") {
		t.Error("the camera password is in the logs")
	}
	for _, ev := range h.events.Events(0) {
		if ev.Ingest != nil && strings.Contains(ev.Ingest.URL, "s3cret-pw") {
			t.Errorf("the camera password is in %s", ev.Type)
		}
	}
}

// The camera is switched off for 10 s and comes back: the ingest goes reconnecting (with the
// error) then connected; the retries follow the backoff (1 s, 2 s, 4 s, 8 s, each up to 20%
// shorter); a WHEP viewer and an RTSP player of the room resume without doing anything.
func TestCameraRestartReconnectsOnTheBackoff(t *testing.T) {
	t.Cleanup(test.CheckRoutines(t)) // runs last: after every other cleanup
	e := rtsptest.NewCamera(t, rtsptest.CameraOptions{})
	rec := &dialRecorder{addr: e.Addr()}
	h := newHarness(t, harnessOptions{dial: rec.dial})
	ing := h.pull(e.URL("", ""), "auto")
	h.connected(ing, 0)
	v := playWHEP(t, h.http.URL+"/whep/cams")
	nvr := playRTSP(t, "rtsp://"+h.rtsp+"/cams", "tcp")
	sfutest.WaitFor(t, "the viewers", 15*time.Second, func() bool { return v.video.Load() > 50 && nvr.video.Load() > 50 })

	seq := h.lastSeq()
	off := time.Now()
	e.Shutdown()
	h.waitEvent("reconnecting", seq, 10*time.Second, stateChanged(ing.ID, ingest.StateReconnecting))
	time.Sleep(10*time.Second - time.Since(off)) // the camera stays off for 10 s
	before, beforeNVR := v.video.Load(), nvr.video.Load()
	e.Start()
	back := h.waitEvent("connected again", seq, 20*time.Second, stateChanged(ing.ID, ingest.StateConnected))
	if back.PrevState != ingest.StateReconnecting || back.Ingest.Retries < 3 {
		t.Errorf("connected event: prev %q retries %d", back.PrevState, back.Ingest.Retries)
	}
	var drop sfu.Event
	for _, ev := range h.events.Events(seq) {
		if stateChanged(ing.ID, ingest.StateReconnecting)(ev) {
			drop = ev
			break
		}
	}
	if drop.PrevState != ingest.StateConnected || drop.Error == nil || drop.Error.Code != "connection_lost" {
		t.Errorf("reconnecting event: prev %q error %+v", drop.PrevState, drop.Error)
	}

	// Retry timing: the first retry about 1 s after the drop, then 2 s, 4 s, 8 s apart.
	dials := rec.since(off)
	if len(dials) < 4 {
		t.Fatalf("%d connection attempts during the outage, want 4 (1+2+4+8 s)", len(dials))
	}
	const slack = 700 * time.Millisecond // connection attempt and scheduling on a loaded machine
	prev := off
	for i, d := range dials[:4] {
		want := time.Second << i
		gap := d.Sub(prev)
		if gap < want*8/10-100*time.Millisecond || gap > want+slack {
			t.Errorf("attempt %d came %v after the previous one, want %v-%v", i+1, gap.Round(time.Millisecond), want*8/10, want)
		}
		t.Logf("retry %d: %v after the previous attempt (schedule %v, up to 20%% shorter)", i+1, gap.Round(time.Millisecond), want)
		prev = d
	}
	if len(dials) > 5 {
		t.Errorf("%d connection attempts: hammering the camera", len(dials))
	}

	sfutest.WaitFor(t, "the viewers to resume on their own", 15*time.Second, func() bool {
		return v.video.Load() > before+50 && nvr.video.Load() > beforeNVR+50
	})
	for _, ev := range h.events.Events(seq) {
		if ev.Type == sfu.EventStreamStopped || ev.Type == sfu.EventStreamFailed && ev.Participant.Kind != sfu.ParticipantRTSPPull {
			t.Errorf("a viewer's session ended: %s %s", ev.Type, ev.Reason)
		}
	}
}

// The camera keeps the session but stops sending: track.interrupted within 3 s, then
// track.recovered when it sends again; the ingest stays connected.
func TestCameraSilenceInterruptsAndRecovers(t *testing.T) {
	t.Cleanup(test.CheckRoutines(t)) // runs last: after every other cleanup
	e := rtsptest.NewCamera(t, rtsptest.CameraOptions{})
	h := newHarness(t, harnessOptions{})
	ing := h.pull(e.URL("", ""), "tcp")
	p := h.connected(ing, 0)
	video := trackOf(p, sfu.KindVideo)
	sfutest.WaitFor(t, "media", 10*time.Second, func() bool { return !video.LastPacketAt().IsZero() })

	seq := h.lastSeq()
	e.Paused.Store(true)
	paused := time.Now()
	interrupted := func(typ string) func(sfu.Event) bool {
		return func(ev sfu.Event) bool { return ev.Type == typ && ev.Track != nil && ev.Track.SID == video.SID() }
	}
	h.waitEvent("track.interrupted", seq, 6*time.Second, interrupted(sfu.EventTrackInterrupted))
	d := time.Since(paused)
	if d > 3*time.Second+700*time.Millisecond {
		t.Errorf("track.interrupted came %v after the media stopped", d)
	}
	t.Logf("track.interrupted %v after the last packet was sent", d.Round(time.Millisecond))
	time.Sleep(5*time.Second - time.Since(paused))
	e.Paused.Store(false)
	resumed := time.Now()
	h.waitEvent("track.recovered", seq, 5*time.Second, interrupted(sfu.EventTrackRecovered))
	t.Logf("track.recovered %v after the media resumed", time.Since(resumed).Round(time.Millisecond))
	for _, ev := range h.events.Events(seq) {
		if ev.Type == sfu.EventIngestStateChanged || ev.Type == sfu.EventParticipantLeft {
			t.Errorf("%s during a pause shorter than read_timeout", ev.Type)
		}
	}
}

// A camera that stays silent for read_timeout is reconnected (no_media_timeout).
func TestCameraSilentPastReadTimeoutReconnects(t *testing.T) {
	t.Cleanup(test.CheckRoutines(t)) // runs last: after every other cleanup
	e := rtsptest.NewCamera(t, rtsptest.CameraOptions{})
	h := newHarness(t, harnessOptions{readTimeout: 2 * time.Second, backoff: Backoff{Initial: 100 * time.Millisecond, Max: time.Second}})
	ing := h.pull(e.URL("", ""), "auto")
	h.connected(ing, 0)
	seq := h.lastSeq()
	e.Paused.Store(true)
	ev := h.waitEvent("reconnecting", seq, 10*time.Second, stateChanged(ing.ID, ingest.StateReconnecting))
	if ev.Error == nil || ev.Error.Code != sfu.ReasonNoMediaTimeout {
		t.Errorf("reconnecting with %+v, want no_media_timeout", ev.Error)
	}
	e.Paused.Store(false)
	h.waitEvent("connected again", ev.Seq, 15*time.Second, stateChanged(ing.ID, ingest.StateConnected))
}

// A wrong camera password: ingest.state_changed says authentication failed (without the
// password), and the retries follow the backoff instead of hammering the camera.
func TestCameraWrongPasswordRetriesOnTheBackoff(t *testing.T) {
	t.Cleanup(test.CheckRoutines(t)) // runs last: after every other cleanup
	e := rtsptest.NewCamera(t, rtsptest.CameraOptions{User: "admin", Pass: "right-one"})
	rec := &dialRecorder{addr: e.Addr()}
	h := newHarness(t, harnessOptions{dial: rec.dial})
	start := time.Now()
	ing := h.pull(e.URL("admin", "wrong-guess"), "auto")
	ev := h.waitEvent("reconnecting", 0, 10*time.Second, stateChanged(ing.ID, ingest.StateReconnecting))
	if ev.Error == nil || ev.Error.Code != "authentication_failed" || !strings.Contains(ev.Error.Message, "authentication failed") {
		t.Errorf("error %+v", ev.Error)
	}
	time.Sleep(5*time.Second - time.Since(start))
	dials := rec.since(start)
	for i := 1; i < len(dials); i++ {
		t.Logf("attempt %d: %v after the previous one", i+1, dials[i].Sub(dials[i-1]).Round(time.Millisecond))
	}
	// Attempts at 0 s, about 1 s and about 3 s; the next one is due after 5.6 s at the earliest.
	if len(dials) != 3 {
		t.Errorf("%d connection attempts in 5 s, want 3", len(dials))
	}
	if got := e.Refused.Load(); got < 2 || got > int32(len(dials)) {
		t.Errorf("the camera refused %d requests with credentials for %d connections", got, len(dials))
	}
	cur, _ := h.store.Get(ing.ID)
	if cur.State != ingest.StateReconnecting || cur.Retries < 2 || !strings.Contains(cur.Error, "authentication failed") {
		t.Errorf("status %s retries %d error %q", cur.State, cur.Retries, cur.Error)
	}
	for _, where := range []string{h.logs.String(), cur.Error, ev.Error.Message, cur.Redacted().URL} {
		if strings.Contains(where, "wrong-guess") {
			t.Fatalf("the password leaked: %q", tailLines(where, 5))
		}
	}
	if h.participant("cams", ing.ID) != nil {
		t.Error("a camera that never played is in its room")
	}
}

// Transports: UDP, TCP, and auto on a camera without UDP (falls back to TCP); RTSPS with the
// camera's self-signed certificate.
func TestCameraTransports(t *testing.T) {
	t.Cleanup(test.CheckRoutines(t)) // runs last: after every other cleanup
	for _, tc := range []struct {
		name      string
		opts      rtsptest.CameraOptions
		transport string
	}{
		{"udp", rtsptest.CameraOptions{}, "udp"},
		{"tcp", rtsptest.CameraOptions{}, "tcp"},
		{"auto without udp", rtsptest.CameraOptions{NoUDP: true}, "auto"},
		{"rtsps", rtsptest.CameraOptions{TLS: true, NoUDP: true}, "tcp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := rtsptest.NewCamera(t, tc.opts)
			h := newHarness(t, harnessOptions{})
			ing := h.pull(e.URL("", ""), tc.transport)
			p := h.connected(ing, 0)
			sink := &packetSink{}
			sub, err := trackOf(p, sfu.KindVideo).Subscribe(sink, sfu.SubscribeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			sfutest.WaitFor(t, "video", 10*time.Second, func() bool { return len(sink.all()) > 50 })
		})
	}
}

// AAC as MPEG4-GENERIC and as LATM both come out as one AAC representation (MPEG4-GENERIC,
// AAC-hbr) whose access units are the camera's.
func TestCameraAACIsNormalized(t *testing.T) {
	t.Cleanup(test.CheckRoutines(t)) // runs last: after every other cleanup
	fx := rtsptest.LoadFixtures(t)
	for _, kind := range []string{"aac", "latm"} {
		t.Run(kind, func(t *testing.T) {
			e := rtsptest.NewCamera(t, rtsptest.CameraOptions{Audio: kind})
			h := newHarness(t, harnessOptions{})
			ing := h.pull(e.URL("", ""), "tcp")
			p := h.connected(ing, 0)
			audio := trackOf(p, sfu.KindAudio)
			c := audio.Codec()
			if c.Name != sfu.CodecAAC || c.ClockRate != 48000 || c.Channels != 2 || !strings.Contains(c.Fmtp, "mode=AAC-hbr") {
				t.Fatalf("audio codec %+v", c)
			}
			sink := &packetSink{}
			sub, err := audio.Subscribe(sink, sfu.SubscribeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			sfutest.WaitFor(t, "audio", 10*time.Second, func() bool { return len(sink.all()) > 50 })
			dec := &rtpmpeg4audio.Decoder{SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3}
			if err := dec.Init(); err != nil {
				t.Fatal(err)
			}
			known := map[string]bool{}
			for _, au := range fx.AAC {
				known[string(au)] = true
			}
			matched := 0
			for _, pk := range sink.all() {
				aus, err := dec.Decode(&rtp.Packet{Header: pk.Header, Payload: pk.Payload})
				if err != nil {
					t.Fatalf("a packet does not decode as MPEG4-GENERIC: %v", err)
				}
				for _, au := range aus {
					if !known[string(au)] {
						t.Fatal("an access unit differs from the camera's")
					}
					matched++
				}
			}
			if matched < 50 {
				t.Errorf("%d access units", matched)
			}
		})
	}
}

// A track in a codec sluice does not take is listed in the ingest's status; the others play.
func TestCameraUnsupportedCodecIsListed(t *testing.T) {
	t.Cleanup(test.CheckRoutines(t)) // runs last: after every other cleanup
	e := rtsptest.NewCamera(t, rtsptest.CameraOptions{MJPEG: true})
	h := newHarness(t, harnessOptions{})
	ing := h.pull(e.URL("", ""), "tcp")
	p := h.connected(ing, 0)
	if n := len(p.Tracks()); n != 2 {
		t.Errorf("%d tracks published, want H.264 and G.711", n)
	}
	cur, _ := h.store.Get(ing.ID)
	if len(cur.Unsupported) != 1 || !strings.Contains(cur.Unsupported[0], "JPEG") {
		t.Errorf("unsupported %v", cur.Unsupported)
	}
}

// Deleting the ingest ends the pull: disconnected, and the camera leaves its room.
func TestCameraIngestDeleted(t *testing.T) {
	t.Cleanup(test.CheckRoutines(t)) // runs last: after every other cleanup
	e := rtsptest.NewCamera(t, rtsptest.CameraOptions{})
	h := newHarness(t, harnessOptions{})
	ing := h.pull(e.URL("", ""), "tcp")
	h.connected(ing, 0)
	seq := h.lastSeq()
	if err := h.store.Delete(ing.ID); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range h.events.Events(seq) {
		got = append(got, ev.Type)
	}
	if !slices.Contains(got, sfu.EventParticipantLeft) || got[len(got)-1] != sfu.EventIngestDeleted ||
		got[len(got)-2] != sfu.EventIngestStateChanged {
		t.Errorf("events %v", got)
	}
	if h.participant("cams", ing.ID) != nil {
		t.Error("the camera is still in its room")
	}
}
