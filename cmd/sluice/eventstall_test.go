package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/rtc"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// opCeiling is the most a room operation may take while the event log is stalled: far from
// the seconds a stalled write lasts, so that only waiting for the log can cross it.
const opCeiling = 200 * time.Millisecond

// natsStore is the daemon's external JetStream, run by the test on a fixed loopback port so
// that it can be stopped, replaced by a server without JetStream, and started again on the
// same store directory.
type natsStore struct {
	t    *testing.T
	port int
	dir  string
	srv  *server.Server
}

func startNATSStore(t *testing.T) *natsStore {
	n := &natsStore{t: t, port: sfutest.FreeTCPPort(t), dir: t.TempDir()}
	n.start(true)
	t.Cleanup(n.stop)
	return n
}

func (n *natsStore) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// start runs the server; without jetStream it answers connections but stores nothing, so
// every write fails at once ("no responders").
func (n *natsStore) start(jetStream bool) {
	n.t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: n.port, JetStream: jetStream, StoreDir: n.dir, NoSigs: true, NoLog: true})
	if err != nil {
		n.t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		n.t.Fatal("nats server not ready")
	}
	n.srv = srv
}

// stop shuts the server down: writes in flight and new ones wait for it until they time out.
func (n *natsStore) stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	}
}

// timed runs op and fails the test when it took opCeiling or more.
func timed(t *testing.T, what string, op func() error) {
	t.Helper()
	start := time.Now()
	err := op()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	t.Logf("%s: %v", what, took.Round(time.Millisecond))
	if took >= opCeiling {
		t.Errorf("%s took %v with the event log stalled, want < %v", what, took, opCeiling)
	}
}

// metricSum scrapes /metrics and sums every series of name (all label values).
func metricSum(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// negotiateWHEP sets up a receive-only viewer of room and returns it once the daemon answered.
func negotiateWHEP(t *testing.T, endpoint string) error {
	pc, err := newViewerAPI(t).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return err
	}
	t.Cleanup(func() { _ = pc.Close() })
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = rtc.Negotiate(ctx, endpoint, "", pc)
	return err
}

// playRTSP runs DESCRIBE, SETUP and PLAY over TCP, each timed.
func playRTSP(t *testing.T, rawURL string) {
	t.Helper()
	u, err := base.ParseURL(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	tcp := gortsplib.TransportTCP
	c := &gortsplib.Client{Scheme: u.Scheme, Host: u.Host, Transport: &tcp}
	if err := c.Start2(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	var desc *description.Session
	timed(t, "RTSP DESCRIBE", func() (err error) { desc, _, err = c.Describe(u); return err })
	timed(t, "RTSP SETUP", func() error { return c.SetupAll(desc.BaseURL, desc.Medias) })
	timed(t, "RTSP PLAY", func() error { _, err := c.Play(nil); return err })
}

// kickViewers removes every WHEP and RTSP participant of room through the API, each timed.
func kickViewers(t *testing.T, base, room string) int {
	t.Helper()
	resp, err := http.Get(base + "/v1/rooms/" + room)
	if err != nil {
		t.Fatal(err)
	}
	var st sfu.RoomStatus
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range st.Participants {
		if k := p.Participant.Kind; k != sfu.ParticipantWebRTC && k != sfu.ParticipantRTSP {
			continue
		}
		n++
		timed(t, "kick "+p.Participant.Identity, func() error {
			code, err := apiDo(base, http.MethodDelete, "/v1/rooms/"+room+"/participants/"+p.Participant.Identity, "")
			if err == nil && code != http.StatusNoContent {
				err = fmt.Errorf("status %d", code)
			}
			return err
		})
	}
	return n
}

// busyRound does on room what a busy room sees: a new room created, a WHIP publisher, WHEP and
// RTSP viewers joining, and the viewers kicked; each step is timed.
func busyRound(t *testing.T, d *daemonProc, room string, round int) {
	t.Helper()
	timed(t, "create room", func() error {
		code, err := apiDo(d.URL, http.MethodPost, "/v1/rooms", fmt.Sprintf(`{"name": "side-%d"}`, round))
		if err == nil && code != http.StatusCreated && code != http.StatusOK {
			err = fmt.Errorf("status %d", code)
		}
		return err
	})
	timed(t, "WHIP publish", func() error { newWHIPPublisher(t, d.URL+"/whip/"+room); return nil })
	for range 2 {
		timed(t, "WHEP play", func() error { return negotiateWHEP(t, d.URL+"/whep/"+room) })
	}
	playRTSP(t, fmt.Sprintf("rtsp://127.0.0.1:%d/%s", d.RTSPPort, room))
	if n := kickViewers(t, d.URL, room); n < 3 {
		t.Errorf("kicked %d viewers, want at least 3", n)
	}
}

// While the event log is stalled (its server stopped, then back without JetStream, so writes
// first hang and then fail), a busy room keeps working: room create, WHIP, WHEP, RTSP PLAY and
// kicks each answer within opCeiling. When the log returns, every event is written, once,
// in order per room, and none is dropped. A SIGTERM with the log dead again ends the daemon
// promptly, counting and logging the events it could not store.
func TestEventLogStallDoesNotBlockRooms(t *testing.T) {
	nats := startNATSStore(t)
	d := startDaemon(t, fmt.Sprintf("events: { nats_url: %q, stats_interval: 1s }\n", nats.url()))
	const room = "busy"
	pub := newWHIPPublisher(t, d.URL+"/whip/"+room)
	d.waitPublisher(t, room, 1)
	_ = playWHEP(t, d.URL+"/whep/"+room)

	nats.stop() // paused: writes wait for the server until their timeout
	busyRound(t, d, room, 1)
	time.Sleep(2 * time.Second) // stats and retries pile up behind the stall

	nats.start(false) // failing: the client reconnects and every write is refused
	time.Sleep(2 * time.Second)
	busyRound(t, d, room, 2)
	if metricSum(t, d.URL, "sluice_events_write_retries_total") == 0 {
		t.Fatal("no write was retried: the event log was not stalled")
	}
	if metricSum(t, d.URL, "sluice_events_queued") == 0 {
		t.Fatal("no event waits in the queue: the event log was not stalled")
	}

	nats.stop()
	nats.start(true) // the log returns with its store
	sfutest.WaitFor(t, "the queue to drain", 30*time.Second, func() bool { return metricSum(t, d.URL, "sluice_events_queued") == 0 })
	if n := metricSum(t, d.URL, "sluice_events_dropped_total"); n != 0 {
		t.Errorf("%v events dropped", n)
	}
	written := metricSum(t, d.URL, "sluice_events_written_total")
	evs := logEvents(t, d.URL)
	if float64(len(evs)) != written {
		t.Errorf("the log holds %d events, the queue wrote %v", len(evs), written)
	}
	checkLogOrder(t, evs)
	if got := countType(evs, sfu.EventParticipantLeft); got < 6 {
		t.Errorf("%d participant.left in the log, want the 6 kicks at least", got)
	}

	nats.stop() // dead again: shutdown must not wait for it for long
	pub.close()
	start := time.Now()
	d.stop()
	t.Logf("SIGTERM with the event log dead: stopped in %v", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(d.logs.String(), "EVENTS LOST") {
		t.Error("no EVENTS LOST line: the events shutdown could not store were lost silently")
	}
}

// checkLogOrder checks that every event id is stored once and that each room's events are in
// the order they were emitted: times never go back, and an object's end follows its start.
func checkLogOrder(t *testing.T, evs []sfu.Event) {
	t.Helper()
	ids := map[string]bool{}
	last := map[string]time.Time{}
	joined := map[string]bool{}
	for _, ev := range evs {
		if ids[ev.ID] {
			t.Errorf("event %s stored twice", ev.ID)
		}
		ids[ev.ID] = true
		room := ev.RoomName()
		if ev.Time.Before(last[room]) {
			t.Errorf("room %q: %s (seq %d) at %v is before the previous event at %v", room, ev.Type, ev.Seq, ev.Time, last[room])
		}
		last[room] = ev.Time
		if ev.Participant == nil {
			continue
		}
		switch ev.Type {
		case sfu.EventParticipantJoined:
			joined[ev.Participant.SID] = true
		default:
			if !joined[ev.Participant.SID] {
				t.Errorf("%s (seq %d) of participant %s before its participant.joined", ev.Type, ev.Seq, ev.Participant.Identity)
			}
		}
	}
}
