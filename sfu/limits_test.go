package sfu

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// When many viewers' queues overflow at once the newest viewers are shed, told with
// stream.failed reason overloaded; the older ones stay. New viewers are refused meanwhile.
func TestShedNewestViewersWhenOverloaded(t *testing.T) {
	var cpu atomic.Int64
	em := NewLocalEmitter(0, nil)
	h, err := NewHub(Options{Config: DefaultConfig(), Emitter: em, Tick: 10 * time.Millisecond,
		CPU: func() time.Duration { return time.Duration(cpu.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- h.Run(ctx) }()
	defer func() { cancel(); <-done }()

	pub, _ := h.Join("big", ParticipantSpec{Identity: "pub"})
	video, _ := pub.Publish(TrackSpec{Codec: testH264, CacheGOP: true})
	release := make(chan struct{})
	defer close(release)
	stuck := SinkFunc(func(*Packet, bool) error { <-release; return nil })
	var viewers []*Participant
	for i := range 20 {
		v, err := h.Join("big", ParticipantSpec{Identity: "v" + string(rune('a'+i)), Kind: ParticipantWebRTC})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.StartStream(StreamSpec{Direction: DirectionPlay, Protocol: ProtocolWHEP}); err != nil {
			t.Fatal(err)
		}
		if _, err := v.Subscribe(video, stuck, SubscribeOptions{QueueSize: 4}); err != nil {
			t.Fatal(err)
		}
		viewers = append(viewers, v)
		time.Sleep(time.Millisecond) // distinct join times
	}
	if h.Overloaded() {
		t.Fatal("overloaded before any load")
	}
	// Every viewer's goroutine is stuck: their queues overflow as packets keep coming.
	stop, writerDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(writerDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				video.WritePacket(videoPacket(i, 30))
			}
		}
	}()
	waitFor(t, "a viewer to be shed", func() bool {
		select {
		case <-viewers[19].Done(): // closed after its events
			return true
		default:
			return false
		}
	})
	close(stop)
	<-writerDone
	if viewers[19].LeaveReason() != ReasonOverloaded {
		t.Fatalf("reason %q", viewers[19].LeaveReason())
	}
	if viewers[0].LeaveReason() != "" {
		t.Fatal("the oldest viewer was shed")
	}
	if !h.Overloaded() {
		t.Fatal("new viewers should be refused right after shedding")
	}
	var failed *Event
	for _, e := range em.Events(0) {
		if e.Type == EventStreamFailed && e.Participant.Identity == viewers[19].Identity() {
			failed = &e
		}
	}
	if failed == nil || failed.Reason != ReasonOverloaded || failed.Error == nil || failed.Error.Code != ReasonOverloaded {
		t.Fatalf("want stream.failed overloaded for the newest viewer, got %+v", failed)
	}

}

// A process using 95% of the machine is past the 0.9 budget: new viewers are refused.
func TestCPUBudgetRefusesViewers(t *testing.T) {
	var cpu atomic.Int64
	h, err := NewHub(Options{Config: DefaultConfig(), CPU: func() time.Duration { return time.Duration(cpu.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	h.measureLoad(now)
	cpu.Add(int64(float64(time.Second) * 0.5 * float64(runtime.NumCPU())))
	h.measureLoad(now.Add(time.Second))
	if h.Overloaded() {
		t.Fatalf("usage %.2f is under the budget", h.CPUUsage())
	}
	cpu.Add(int64(float64(time.Second) * 0.95 * float64(runtime.NumCPU())))
	h.measureLoad(now.Add(2 * time.Second))
	if !h.Overloaded() || h.CPUUsage() < 0.9 {
		t.Fatalf("usage %.2f should exceed the 0.9 budget", h.CPUUsage())
	}
	if _, err := NewHub(Options{Config: DefaultConfig(), Limits: Limits{CPUBudget: 1.5}}); err == nil {
		t.Fatal("a budget above 1 was accepted")
	}
}

// A send path that drops more than 1 % of its packets means the daemon lacks CPU: the newest
// viewers are shed as when their queues overflow, the hub is congested meanwhile, it waits for
// the sessions it closed to go before it sheds again, and stops when the drops stop.
func TestShedOnSendDrops(t *testing.T) {
	h, advance := clockHub(t)
	var sent, dropped atomic.Uint64
	h.WatchSend(func() (uint64, uint64) { return sent.Load(), dropped.Load() })
	pub, _ := h.Join("big", ParticipantSpec{Identity: "pub"})
	if _, err := pub.Publish(TrackSpec{Codec: testH264}); err != nil {
		t.Fatal(err)
	}
	var viewers []*Participant
	for i := range 20 {
		v, err := h.Join("big", ParticipantSpec{Identity: fmt.Sprintf("v%02d", i), Kind: ParticipantWebRTC})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.StartStream(StreamSpec{Direction: DirectionPlay, Protocol: ProtocolWHEP}); err != nil {
			t.Fatal(err)
		}
		viewers = append(viewers, v)
		advance(time.Millisecond) // distinct join times
	}
	shed := func() []string {
		var out []string
		for _, v := range viewers {
			if v.LeaveReason() == ReasonOverloaded {
				out = append(out, v.Identity())
			}
		}
		return out
	}
	second := func(s, d uint64) {
		t.Helper()
		advance(time.Second)
		sent.Add(s)
		dropped.Add(d)
		h.shed()
	}

	second(10000, 0)
	second(10000, 50) // 0.5 %: a hiccup
	if got := shed(); len(got) != 0 || h.Congested() {
		t.Fatalf("shed %v (congested %v) on 0.5 %% of drops", got, h.Congested())
	}
	second(10000, 500) // 4.8 %: overloaded
	if got := shed(); len(got) != 1 || got[0] != "v19" || !h.Congested() || !h.Overloaded() {
		t.Fatalf("after 4.8 %% of drops: shed %v, congested %v, overloaded %v; want v19 shed", got, h.Congested(), h.Overloaded())
	}
	second(10000, 500) // the closed sessions' own cost: not a reason to shed more yet
	if got := shed(); len(got) != 1 {
		t.Fatalf("shed again %v within a second of shedding", got)
	}
	second(10000, 500) // still dropping: shed the next newest
	if got := shed(); len(got) != 2 || got[0] != "v18" {
		t.Fatalf("shed %v, want v18 and v19", got)
	}
	for range 4 { // the drops stop: so does shedding, and the congestion after 3 s
		second(10000, 0)
	}
	if got := shed(); len(got) != 2 || h.Congested() {
		t.Fatalf("shed %v, congested %v after the drops stopped", got, h.Congested())
	}
}

// Viewers whose packets wait in their queues longer than lagLimit are behind, though their
// queues have not overflowed: the newest viewer is shed.
func TestShedWhenViewersFallBehind(t *testing.T) {
	h, advance := clockHub(t)
	pub, _ := h.Join("big", ParticipantSpec{Identity: "pub"})
	audio, err := pub.Publish(TrackSpec{Codec: Codec{Name: CodecOpus, ClockRate: 48000, Channels: 2}})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var delivered atomic.Int64
	slow := SinkFunc(func(*Packet, bool) error { <-release; delivered.Add(1); return nil })
	var viewers []*Participant
	for i := range 4 {
		v, err := h.Join("big", ParticipantSpec{Identity: fmt.Sprintf("v%d", i), Kind: ParticipantWebRTC})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.StartStream(StreamSpec{Direction: DirectionPlay, Protocol: ProtocolWHEP}); err != nil {
			t.Fatal(err)
		}
		if _, err := v.Subscribe(audio, slow, SubscribeOptions{}); err != nil {
			t.Fatal(err)
		}
		viewers = append(viewers, v)
		advance(time.Millisecond)
	}
	for i := range 2 * lagEvery { // well within the queue: nothing overflows
		audio.WritePacket(&Packet{Header: rtp.Header{SequenceNumber: uint16(i), Timestamp: uint32(i * 960)}, Payload: []byte{1}})
	}
	h.shed() // packets are waiting, but not for long yet
	if viewers[3].LeaveReason() != "" {
		t.Fatal("shed before anyone was behind")
	}
	advance(time.Second)
	close(release)
	waitFor(t, "the queued packets", func() bool { return delivered.Load() == int64(4*2*lagEvery) })
	h.shed()
	if viewers[3].LeaveReason() != ReasonOverloaded || viewers[0].LeaveReason() != "" || !h.Congested() {
		t.Fatalf("after packets waited 1 s: newest %q, oldest %q, congested %v", viewers[3].LeaveReason(), viewers[0].LeaveReason(), h.Congested())
	}
	for _, v := range viewers {
		v.Close(ReasonClientDisconnected, nil)
	}
}

// One round sheds 5 % of the viewers, or half the send path's drop share, at most 20 %.
func TestShedCount(t *testing.T) {
	cases := []struct {
		viewers       int
		sent, dropped uint64
		want          int
	}{
		{20, 10000, 500, 1},     // 4.8 % dropped: 5 %
		{100, 0, 0, 5},          // queues overflowing, nothing dropped in the send path
		{10, 0, 0, 1},           // at least one
		{80, 30000, 10000, 10},  // 25 % dropped: 12.5 %
		{80, 13659, 32829, 16},  // 70 % dropped: capped at 20 %
		{200, 66055, 12978, 17}, // 16.4 % dropped: 8.2 %
	}
	for _, c := range cases {
		if got := shedCount(c.viewers, c.sent, c.dropped); got != c.want {
			t.Errorf("shedCount(%d, %d, %d) = %d, want %d", c.viewers, c.sent, c.dropped, got, c.want)
		}
	}
}

// clockHub is a hub on a clock the test advances, with no CPU used.
func clockHub(t *testing.T) (*Hub, func(time.Duration)) {
	t.Helper()
	var mu sync.Mutex
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	h, err := NewHub(Options{Config: DefaultConfig(), Clock: clock, CPU: func() time.Duration { return 0 }})
	if err != nil {
		t.Fatal(err)
	}
	return h, func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
}

// Over the memory high-water mark, new sessions of every kind are refused with an
// OverloadError and a (rate-limited) auth.failed reason overloaded; those already in the room
// are untouched, and admission resumes once memory falls.
func TestMemoryAdmission(t *testing.T) {
	var used atomic.Uint64
	em := NewLocalEmitter(0, nil)
	h, err := NewHub(Options{Config: DefaultConfig(), Emitter: em, Tick: 10 * time.Millisecond,
		MemoryBudget: 100 << 20, Memory: used.Load})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- h.Run(ctx) }()
	defer func() { cancel(); <-done }()

	used.Store(79 << 20)
	pub, err := h.Join("r", ParticipantSpec{Identity: "pub", Kind: ParticipantRTMP})
	if err != nil {
		t.Fatal(err)
	}
	used.Store(81 << 20)
	waitFor(t, "the sample", func() bool { u, _, _ := h.MemoryUsage(); return u == 81<<20 })
	for i := range 15 {
		_, err := h.Join("r", ParticipantSpec{Identity: fmt.Sprintf("v%d", i), Kind: ParticipantWebRTC, RemoteAddr: "127.0.0.1:9"})
		var oe *OverloadError
		if !errors.As(err, &oe) || !errors.Is(err, ErrOverloaded) || oe.Resource != "memory" || oe.Mark != 80<<20 {
			t.Fatalf("join %d over the mark: %v, want an OverloadError for memory", i, err)
		}
	}
	if total, unreported := h.Refusals(); total != 15 || unreported == 0 {
		t.Errorf("refusals %d (%d unreported), want 15 with some over the event rate", total, unreported)
	}
	refusals := 0
	for _, e := range em.Events(0) {
		if e.Type == EventAuthFailed && e.Reason == ReasonOverloaded && e.Error != nil && e.Error.Code == "memory" && e.Protocol == ParticipantWebRTC {
			refusals++
		}
	}
	if refusals != overloadEventBurst {
		t.Errorf("%d refusal events, want the burst of %d", refusals, overloadEventBurst)
	}
	select {
	case <-pub.Done():
		t.Fatal("the admitted publisher was closed")
	default:
	}
	used.Store(50 << 20)
	waitFor(t, "admission to resume", func() bool {
		_, err := h.Join("r", ParticipantSpec{Identity: "late"})
		return err == nil
	})
}
