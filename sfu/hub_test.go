package sfu

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/transport/v4/test"
)

var testH264 = Codec{Name: CodecH264, ClockRate: 90000, PayloadType: 96}
var testOpus = Codec{Name: CodecOpus, ClockRate: 48000, Channels: 2, PayloadType: 111}

func newTestHub(t *testing.T, cfg Config) (*Hub, *LocalEmitter) {
	t.Helper()
	em := NewLocalEmitter(0, nil)
	h, err := NewHub(Options{Config: cfg, Emitter: em, Tick: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return h, em
}

func types(evs []Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return out
}

// videoPacket builds packet i of a stream with a keyframe every gop packets.
func videoPacket(i, gop int) *Packet {
	kf := i%gop == 0
	payload := []byte{0x41, byte(i)} // non-IDR slice
	if kf {
		payload = []byte{0x65, byte(i)} // IDR slice
	}
	return &Packet{
		Header:   rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: uint16(i), Timestamp: uint32(i * 3000), SSRC: 1, Marker: true},
		Payload:  payload,
		Keyframe: kf,
	}
}

type collectSink struct {
	mu   sync.Mutex
	seqs []uint16
	gaps int
	kf   []bool
}

func (c *collectSink) WritePacket(p *Packet, gap bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seqs = append(c.seqs, p.Header.SequenceNumber)
	c.kf = append(c.kf, p.Keyframe)
	if gap {
		c.gaps++
	}
	return nil
}

func (c *collectSink) snapshot() ([]uint16, []bool, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.seqs), slices.Clone(c.kf), c.gaps
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestLifecycleEvents(t *testing.T) {
	defer test.CheckRoutines(t)()
	cfg := DefaultConfig()
	cfg.EmptyTimeout = 50 * time.Millisecond
	h, em := newTestHub(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- h.Run(ctx) }()

	pub, err := h.Join("lobby", ParticipantSpec{Identity: "alice", Kind: ParticipantWHIP})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := pub.StartStream(StreamSpec{Direction: DirectionPublish, Protocol: ProtocolWHIP, ExpectTracks: 1})
	if err != nil {
		t.Fatal(err)
	}
	video, err := pub.Publish(TrackSpec{Codec: testH264, Source: SourceCamera})
	if err != nil {
		t.Fatal(err)
	}
	viewer, err := h.Join("lobby", ParticipantSpec{Identity: "bob", Kind: ParticipantWebRTC})
	if err != nil {
		t.Fatal(err)
	}
	if got := h.Room("lobby").MainPublisher(); got != pub {
		t.Fatalf("main publisher = %v, want alice", got)
	}
	sink := &collectSink{}
	if _, err := viewer.Subscribe(video, sink, SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		video.WritePacket(videoPacket(i, 5))
	}
	waitFor(t, "delivery", func() bool { s, _, _ := sink.snapshot(); return len(s) == 10 })
	stream.End(ReasonClientDisconnected, nil)
	pub.Close(ReasonClientDisconnected, nil)
	viewer.Close(ReasonClientDisconnected, nil)
	waitFor(t, "room.finished", func() bool { return h.Room("lobby") == nil })

	want := []string{
		EventRoomStarted, EventParticipantJoined, EventTrackPublished, EventStreamPublishing,
		EventParticipantJoined, EventTrackSubscribed, EventStreamUnpublished,
		EventTrackUnpublished, EventTrackUnsubscribed, EventParticipantLeft,
		EventParticipantLeft, EventRoomFinished,
	}
	evs := em.Events(0)
	if got := types(evs); !slices.Equal(got, want) {
		t.Fatalf("events:\n got %v\nwant %v", got, want)
	}
	for i, e := range evs {
		if e.Seq != uint64(i+1) || e.ID == "" || e.Time.IsZero() || e.Room == nil || e.Room.Name != "lobby" {
			t.Fatalf("event %d has a bad envelope: %+v", i, e)
		}
	}
	if evs[7].Reason != ReasonClientDisconnected || evs[9].Reason != ReasonClientDisconnected {
		t.Fatalf("reasons: %q %q", evs[7].Reason, evs[9].Reason)
	}
	if evs[8].Participant.Identity != "bob" {
		t.Fatalf("track.unsubscribed should name the subscriber, got %s", evs[8].Participant.Identity)
	}
	if evs[11].Reason != ReasonEmptyTimeout {
		t.Fatalf("room.finished reason = %q", evs[11].Reason)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// stream.publishing lists the session's initial track set, a track added later is reported
// by stream.updated, and the terminal event carries every track the stream had.
func TestStreamTrackSet(t *testing.T) {
	defer test.CheckRoutines(t)()
	h, em := newTestHub(t, DefaultConfig())
	defer h.Close()
	for _, c := range []struct {
		name   string
		expect int
		late   bool // the second track comes after PublishSettle
	}{{"announced", 2, false}, {"unknown", 0, false}, {"late", 2, true}} {
		t.Run(c.name, func(t *testing.T) {
			pub, err := h.Join("set-"+c.name, ParticipantSpec{Identity: "obs", Kind: ParticipantRTMP})
			if err != nil {
				t.Fatal(err)
			}
			video, _ := pub.Publish(TrackSpec{Codec: testH264})
			st, err := pub.StartStream(StreamSpec{Direction: DirectionPublish, Protocol: ProtocolRTMP, ExpectTracks: c.expect})
			if err != nil {
				t.Fatal(err)
			}
			if c.late {
				waitFor(t, "stream.publishing after the settle wait", func() bool { return len(streamEvents(em, pub)) == 1 })
			}
			audio, _ := pub.Publish(TrackSpec{Codec: Codec{Name: CodecOpus, ClockRate: 48000, Channels: 2}})
			_ = pub.Unpublish(audio, ReasonUnpublished)
			st.End(ReasonClientDisconnected, nil)
			pub.Close(ReasonClientDisconnected, nil)
			var got []string
			for _, ev := range streamEvents(em, pub) {
				got = append(got, fmt.Sprintf("%s %d", ev.Type, len(ev.Stream.Tracks)))
			}
			want := []string{"stream.publishing 2", "stream.updated 1", "stream.unpublished 2"}
			if c.late {
				want = []string{"stream.publishing 1", "stream.updated 2", "stream.updated 1", "stream.unpublished 2"}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("stream events %v, want %v", got, want)
			}
			if evs := streamEvents(em, pub); !slices.Contains(evs[len(evs)-1].Stream.Tracks, video.SID()) {
				t.Fatal("the terminal event lacks the video track")
			}
		})
	}
}

func streamEvents(em *LocalEmitter, p *Participant) []Event {
	var out []Event
	for _, ev := range em.Events(0) {
		if ev.Stream != nil && ev.Participant != nil && ev.Participant.SID == p.SID() {
			out = append(out, ev)
		}
	}
	return out
}

func TestSubscriberStartsOnKeyframe(t *testing.T) {
	defer test.CheckRoutines(t)()
	h, _ := newTestHub(t, DefaultConfig())
	defer h.Close()
	var requests atomic.Int32
	pub, _ := h.Join("r", ParticipantSpec{Identity: "p"})
	video, err := pub.Publish(TrackSpec{Codec: testH264, Keyframes: KeyframeRequesterFunc(func() { requests.Add(1) })})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		video.WritePacket(videoPacket(i, 5))
	}
	sink := &collectSink{}
	sub, err := video.Subscribe(sink, SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if requests.Load() != 1 {
		t.Fatalf("keyframe requests = %d, want 1 on subscribe", requests.Load())
	}
	for i := 3; i < 12; i++ {
		video.WritePacket(videoPacket(i, 5))
	}
	waitFor(t, "delivery", func() bool { s, _, _ := sink.snapshot(); return len(s) == 7 })
	seqs, kf, _ := sink.snapshot()
	if seqs[0] != 5 || !kf[0] {
		t.Fatalf("first packet = %d (keyframe %v), want keyframe 5", seqs[0], kf[0])
	}
}

func TestGOPCacheStartsAtOnce(t *testing.T) {
	defer test.CheckRoutines(t)()
	h, _ := newTestHub(t, DefaultConfig())
	defer h.Close()
	pub, _ := h.Join("r", ParticipantSpec{Identity: "p"})
	video, _ := pub.Publish(TrackSpec{Codec: testH264, CacheGOP: true})
	for i := range 8 {
		video.WritePacket(videoPacket(i, 5))
	}
	sink := &collectSink{}
	sub, err := video.Subscribe(sink, SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	video.WritePacket(videoPacket(8, 5))
	waitFor(t, "delivery", func() bool { s, _, _ := sink.snapshot(); return len(s) == 4 })
	seqs, _, _ := sink.snapshot()
	if !slices.Equal(seqs, []uint16{5, 6, 7, 8}) {
		t.Fatalf("got %v, want the cached GOP 5 6 7 then 8", seqs)
	}
}

// blockingSink stalls until released, to play a viewer that stopped reading.
type blockingSink struct {
	release chan struct{}
	n       atomic.Int32
}

func (b *blockingSink) WritePacket(*Packet, bool) error {
	b.n.Add(1)
	<-b.release
	return nil
}

func TestSlowSubscriberDoesNotSlowOthers(t *testing.T) {
	defer test.CheckRoutines(t)()
	h, _ := newTestHub(t, DefaultConfig())
	defer h.Close()
	var requests atomic.Int32
	pub, _ := h.Join("r", ParticipantSpec{Identity: "p"})
	video, _ := pub.Publish(TrackSpec{Codec: testH264, Keyframes: KeyframeRequesterFunc(func() { requests.Add(1) })})

	stuck := &blockingSink{release: make(chan struct{})}
	slow, err := video.Subscribe(stuck, SubscribeOptions{QueueSize: 16})
	if err != nil {
		t.Fatal(err)
	}
	fast := &collectSink{}
	fsub, _ := video.Subscribe(fast, SubscribeOptions{QueueSize: 4096})
	const n = 2000
	start := time.Now()
	for i := range n {
		video.WritePacket(videoPacket(i, 100))
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the producer was held back by a stuck subscriber: %v for %d packets", d, n)
	}
	waitFor(t, "fast subscriber", func() bool { s, _, _ := fast.snapshot(); return len(s) == n })
	seqs, _, gaps := fast.snapshot()
	for i, s := range seqs {
		if s != uint16(i) {
			t.Fatalf("fast subscriber lost packets: index %d has seq %d", i, s)
		}
	}
	if gaps != 0 || fsub.Dropped() != 0 {
		t.Fatalf("fast subscriber saw gaps=%d drops=%d", gaps, fsub.Dropped())
	}
	if slow.Dropped() == 0 {
		t.Fatal("the stuck subscriber dropped nothing")
	}
	close(stuck.release)
	fsub.Close()
	slow.Close()
}

func TestOverflowResyncsOnKeyframe(t *testing.T) {
	defer test.CheckRoutines(t)()
	h, _ := newTestHub(t, DefaultConfig())
	defer h.Close()
	pub, _ := h.Join("r", ParticipantSpec{Identity: "p"})
	video, _ := pub.Publish(TrackSpec{Codec: testH264, Keyframes: KeyframeRequesterFunc(func() {})})
	gate := make(chan struct{})
	var mu sync.Mutex
	var got []*Packet
	var gaps []bool
	sink := SinkFunc(func(p *Packet, gap bool) error {
		<-gate
		mu.Lock()
		got, gaps = append(got, p), append(gaps, gap)
		mu.Unlock()
		return nil
	})
	sub, _ := video.Subscribe(sink, SubscribeOptions{QueueSize: 8})
	defer sub.Close()
	for i := range 40 { // keyframes at 0, 10, 20, 30; the queue overflows after the first ones
		video.WritePacket(videoPacket(i, 10))
	}
	close(gate)
	waitFor(t, "drain", func() bool { return sub.q.free() == 8 })
	video.WritePacket(videoPacket(40, 10))
	waitFor(t, "resync", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) > 0 && got[len(got)-1].Header.SequenceNumber == 40
	})
	mu.Lock()
	defer mu.Unlock()
	resumed := -1
	for i := 1; i < len(got); i++ {
		if got[i].Header.SequenceNumber != got[i-1].Header.SequenceNumber+1 {
			resumed = i
			break
		}
	}
	if resumed < 0 {
		t.Fatal("expected a skip after the overflow")
	}
	if !got[resumed].Keyframe || !gaps[resumed] {
		t.Fatalf("after the overflow delivery resumed at seq %d keyframe=%v gap=%v; want a keyframe flagged as gap",
			got[resumed].Header.SequenceNumber, got[resumed].Keyframe, gaps[resumed])
	}
	if sub.Dropped() == 0 {
		t.Fatal("drops not counted")
	}
}

// keyframeCountingTrack publishes a video track on a hub whose clock moves only by advance, and
// counts the keyframe requests its publisher gets.
func keyframeCountingTrack(t *testing.T) (*Track, *atomic.Int32, func(time.Duration)) {
	t.Helper()
	now := time.Unix(1000, 0)
	var clockMu sync.Mutex
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	h, err := NewHub(Options{Config: DefaultConfig(), Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	requests := &atomic.Int32{}
	pub, _ := h.Join("r", ParticipantSpec{Identity: "p"})
	video, _ := pub.Publish(TrackSpec{Codec: testH264, Keyframes: KeyframeRequesterFunc(func() { requests.Add(1) })})
	return video, requests, func(d time.Duration) { clockMu.Lock(); now = now.Add(d); clockMu.Unlock() }
}

func TestKeyframeRequestsThrottled(t *testing.T) {
	video, requests, advance := keyframeCountingTrack(t)
	for range 100 {
		video.RequestKeyframe()
	}
	if requests.Load() != 1 {
		t.Fatalf("requests = %d, want 1 within the interval", requests.Load())
	}
	after := DefaultConfig().KeyframeRequestInterval + 50*time.Millisecond
	advance(after)
	video.RequestKeyframe()
	if requests.Load() != 2 {
		t.Fatalf("requests = %d, want 2 after the interval", requests.Load())
	}
	// A request inside the interval is not lost: the next video packet after it sends it.
	video.RequestKeyframe()
	video.WritePacket(videoPacket(1, 30))
	if requests.Load() != 2 {
		t.Fatalf("requests = %d: the held request went out early", requests.Load())
	}
	advance(after)
	video.WritePacket(videoPacket(2, 30))
	if requests.Load() != 3 {
		t.Fatalf("requests = %d, want the held request sent with the first packet after the interval", requests.Load())
	}
	video.WritePacket(videoPacket(3, 30))
	if requests.Load() != 3 {
		t.Fatal("the held request was sent twice")
	}
}

// A subscriber waiting for its first keyframe asks again every keyframeRetry: a publisher may
// drop a request (browsers ignore one within 300 ms of the previous), and nothing else would
// ask for it.
func TestWaitingSubscriberAsksAgain(t *testing.T) {
	video, requests, advance := keyframeCountingTrack(t)
	sink := &collectSink{}
	sub, err := video.Subscribe(sink, SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if requests.Load() != 1 {
		t.Fatalf("requests = %d at subscribe, want 1", requests.Load())
	}
	const gop = 1000   // packets 1..999 are delta frames
	for i := range 6 { // the publisher ignores the request: delta frames go on (from the first, 1 s)
		advance(keyframeRetry / 5)
		video.WritePacket(videoPacket(i+1, gop))
	}
	if requests.Load() != 2 {
		t.Fatalf("requests = %d after %v of delta frames, want 2", requests.Load(), keyframeRetry)
	}
	video.WritePacket(videoPacket(gop, gop))
	deadline := time.Now().Add(5 * time.Second)
	for {
		sink.mu.Lock()
		n, first := len(sink.kf), len(sink.kf) > 0 && sink.kf[0]
		sink.mu.Unlock()
		if n > 0 {
			if !first {
				t.Fatal("delivery started with a delta frame")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the keyframe was not delivered")
		}
		time.Sleep(5 * time.Millisecond)
	}
	advance(2 * keyframeRetry)
	video.WritePacket(videoPacket(gop+1, gop))
	if requests.Load() != 2 {
		t.Fatalf("requests = %d once delivering, want no more", requests.Load())
	}
}

func TestInterruptedAndRecovered(t *testing.T) {
	defer test.CheckRoutines(t)()
	cfg := DefaultConfig()
	cfg.InterruptAfter = 100 * time.Millisecond
	h, em := newTestHub(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- h.Run(ctx) }()
	pub, _ := h.Join("r", ParticipantSpec{Identity: "cam"})
	video, _ := pub.Publish(TrackSpec{Codec: testH264})
	has := func(typ string) bool { return slices.Contains(types(em.Events(0)), typ) }
	video.WritePacket(videoPacket(0, 10))
	waitFor(t, "track.interrupted", func() bool { return has(EventTrackInterrupted) })
	video.WritePacket(videoPacket(1, 10))
	waitFor(t, "track.recovered", func() bool { return has(EventTrackRecovered) })
	cancel()
	<-done
	got := types(em.Events(0))
	if want := []string{EventTrackInterrupted, EventTrackRecovered}; !slices.Equal(filter(got, "track.interrupted", "track.recovered")[:2], want) {
		t.Fatalf("got %v", got)
	}
	if got[len(got)-1] != EventRoomFinished {
		t.Fatalf("shutdown should finish the room, last event %s", got[len(got)-1])
	}
}

func filter(types []string, keep ...string) []string {
	var out []string
	for _, t := range types {
		if slices.Contains(keep, t) {
			out = append(out, t)
		}
	}
	return out
}

func TestDuplicateIdentity(t *testing.T) {
	h, em := newTestHub(t, DefaultConfig())
	defer h.Close()
	first, _ := h.Join("r", ParticipantSpec{Identity: "same"})
	if _, err := h.Join("r", ParticipantSpec{Identity: "same", RefuseDuplicate: true}); !errors.Is(err, ErrDuplicateIdentity) {
		t.Fatalf("refused join: err = %v", err)
	}
	second, err := h.Join("r", ParticipantSpec{Identity: "same"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-first.Done():
	default:
		t.Fatal("the replaced participant is still present")
	}
	if first.LeaveReason() != ReasonDuplicateIdentity || h.Room("r").Participant("same") != second {
		t.Fatalf("reason %q", first.LeaveReason())
	}
	evs := em.Events(0)
	if evs[len(evs)-2].Type != EventParticipantLeft || evs[len(evs)-2].Reason != ReasonDuplicateIdentity {
		t.Fatalf("want participant.left duplicate_identity before the new join, got %v", types(evs))
	}
}

func TestDeleteRoomRemovesEveryone(t *testing.T) {
	defer test.CheckRoutines(t)()
	h, em := newTestHub(t, DefaultConfig())
	pub, _ := h.Join("r", ParticipantSpec{Identity: "a"})
	video, _ := pub.Publish(TrackSpec{Codec: testH264})
	viewer, _ := h.Join("r", ParticipantSpec{Identity: "b"})
	sub, _ := viewer.Subscribe(video, &collectSink{}, SubscribeOptions{})
	if err := h.DeleteRoom("r"); err != nil {
		t.Fatal(err)
	}
	<-sub.Done()
	if !errors.Is(sub.Err(), ErrTrackClosed) {
		t.Fatalf("sub err = %v", sub.Err())
	}
	if h.Room("r") != nil || h.DeleteRoom("r") == nil {
		t.Fatal("room still there")
	}
	evs := em.Events(0)
	last := evs[len(evs)-1]
	if last.Type != EventRoomFinished || last.Reason != ReasonDeleted {
		t.Fatalf("last event %s %s", last.Type, last.Reason)
	}
	for _, e := range evs {
		if e.Type == EventParticipantLeft && e.Reason != ReasonRoomDeleted {
			t.Fatalf("participant.left reason %q", e.Reason)
		}
	}
	if _, err := pub.Publish(TrackSpec{Codec: testOpus}); !errors.Is(err, ErrParticipantClosed) {
		t.Fatalf("publish after delete: %v", err)
	}
}

func TestSinkErrorEndsSubscription(t *testing.T) {
	defer test.CheckRoutines(t)()
	h, _ := newTestHub(t, DefaultConfig())
	defer h.Close()
	pub, _ := h.Join("r", ParticipantSpec{Identity: "a"})
	audio, _ := pub.Publish(TrackSpec{Codec: testOpus})
	boom := errors.New("peer gone")
	sub, _ := audio.Subscribe(SinkFunc(func(*Packet, bool) error { return boom }), SubscribeOptions{})
	audio.WritePacket(&Packet{Payload: []byte{1}})
	<-sub.Done()
	if !errors.Is(sub.Err(), boom) {
		t.Fatalf("err = %v", sub.Err())
	}
	if n := len(audio.Subscriptions()); n != 0 {
		t.Fatalf("failed subscription still attached (%d)", n)
	}
	sub.Close()
}

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"lobby", true}, {"cam-01_a.b@x", true}, {"", false}, {"../etc", false}, {".hidden", false},
		{"a/b", false}, {"sp ace", false}, {string(make([]byte, 129)), false},
	} {
		if err := ValidateName(tc.name); (err == nil) != tc.ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// A room's change signal fires for its own changes only; the hub-wide one for every room's.
func TestRoomChanged(t *testing.T) {
	h, _ := newTestHub(t, DefaultConfig())
	a, err := h.Join("a", ParticipantSpec{Identity: "x", Kind: ParticipantWHIP})
	if err != nil {
		t.Fatal(err)
	}
	ra := a.Room()
	own, hub := ra.Changed(), h.Changed()
	if _, err := h.Join("b", ParticipantSpec{Identity: "y", Kind: ParticipantWHIP}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-own:
		t.Fatal("room a's signal fired for room b's join")
	default:
	}
	select {
	case <-hub:
	default:
		t.Fatal("the hub-wide signal did not fire for room b's join")
	}
	if err := ra.SetMetadata("m"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-own:
	default:
		t.Fatal("room a's signal did not fire for its metadata")
	}
	a.Close(ReasonClientDisconnected, nil)
}
