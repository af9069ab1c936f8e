package sfu

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
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
