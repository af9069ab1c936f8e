package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/sluice-media/sluice/sfu"
)

// What a load test sees of the daemon's overload handling: subscribers refused at admission
// (503), subscribers whose sessions the daemon ended (shed), the stream.failed events with
// reason overloaded it emitted, and how the survivors fared before, while and after it shed.

// OverloadReport is the overload part of a load test's report, present when the daemon
// refused or shed subscribers, or said it shed some.
type OverloadReport struct {
	Refused int `json:"refused"`
	Shed    int `json:"shed"`
	// Events counts the stream.failed events with reason overloaded for the room during the
	// run; EventsError says why they could not be followed (then Events is 0).
	Events      int    `json:"overloaded_events"`
	EventsError string `json:"events_error,omitempty"`
	// ShedNamed counts the shed subscribers one of those events names, and ShedUnnoticed those
	// among them that had not yet seen their session end at the end of the window (a DTLS
	// close_notify lost in a congested send queue leaves a viewer waiting for ICE to time
	// out): key mode only, where the subscribers' tokens carry identities (in open mode the
	// daemon names them itself). A subscriber an event names is shed, noticed or not, played
	// or not (one shed before its first video packet is otherwise a failure).
	ShedNamed     *int `json:"shed_with_event,omitempty"`
	ShedUnnoticed *int `json:"shed_unnoticed,omitempty"`
	// Survivors are the subscribers that played to the end of the window, over the window;
	// ShedViewers are the shed ones, over their lives (first video packet to being shed).
	Survivors   GroupReport `json:"survivors"`
	ShedViewers GroupReport `json:"shed_subscribers"`
	// FirstShedS and LastShedS are seconds since the ramp started.
	FirstShedS float64 `json:"first_shed_s,omitempty"`
	LastShedS  float64 `json:"last_shed_s,omitempty"`
	// Before is the 5 s before the first shed, During from the first to the last, After from
	// 2 s after the last to the end of the window (nil when a phase is shorter than 2 s).
	Before *PhaseReport `json:"before_shedding,omitempty"`
	During *PhaseReport `json:"while_shedding,omitempty"`
	After  *PhaseReport `json:"after_shedding,omitempty"`
	// Timeline is one entry per second from the start of the ramp.
	Timeline []PhaseReport `json:"timeline"`
}

// GroupReport is what a group of subscribers received.
type GroupReport struct {
	Count       int     `json:"count"`
	BitrateKbps float64 `json:"bitrate_kbps_per_subscriber"`
	LossPct     float64 `json:"packet_loss_pct"`

	seconds, bytes, received, expected float64 // the sums of add, which finish turns into the figures
}

// PhaseReport is a stretch of the run: the subscribers playing all through it, what each
// received, and the daemon's CPU.
type PhaseReport struct {
	FromS       float64 `json:"from_s"`
	ToS         float64 `json:"to_s"`
	Playing     int     `json:"playing"`
	Shed        int     `json:"shed_so_far"`
	BitrateKbps float64 `json:"bitrate_kbps_per_subscriber"`
	LossPct     float64 `json:"packet_loss_pct"`
	// SocketDropPct is the part of the packets sent to them that the kernel dropped at their
	// full sockets: loss that happened in this machine's receivers, not in the daemon or on
	// the way (on a shared machine, a viewer that does not get the CPU to read loses packets).
	SocketDropPct float64 `json:"receiver_socket_drop_pct"`
	Cores         float64 `json:"daemon_cpu_cores"`
}

// overloadWatch follows the room's stream.failed events and keeps those with reason
// overloaded. Its goroutine ends with the context given to watchOverload.
type overloadWatch struct {
	connected chan struct{}
	once      sync.Once
	done      chan struct{} // closed when following ends

	mu     sync.Mutex
	events int
	named  map[string]time.Time // identities of the overloaded participants, and when
	err    error                // why following ended early
}

func watchOverload(ctx context.Context, follow func(ctx context.Context, room string, connected func(), onEvent func(raw []byte)) error, room string, wg *sync.WaitGroup) *overloadWatch {
	w := &overloadWatch{connected: make(chan struct{}), done: make(chan struct{}), named: map[string]time.Time{}}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(w.done)
		connected := func() { w.once.Do(func() { close(w.connected) }) }
		err := follow(ctx, room, connected, func(raw []byte) {
			var ev sfu.Event
			if json.Unmarshal(raw, &ev) != nil || ev.Reason != sfu.ReasonOverloaded {
				return
			}
			w.mu.Lock()
			w.events++
			if ev.Participant != nil {
				w.named[ev.Participant.Identity] = ev.Time
			}
			w.mu.Unlock()
		})
		if err != nil {
			w.mu.Lock()
			w.err = err
			w.mu.Unlock()
		}
	}()
	return w
}

// markNamed marks the subscribers an overloaded event names as shed: the daemon said it ended
// them. One that played and had not noticed ends at its last packet; one shed before its first
// video packet (whose client saw a failure) when the event says. It returns how many had not
// noticed.
func (w *overloadWatch) markNamed(subs []*loadSubscriber) (unnoticed int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range subs {
		at, ok := w.named[s.identity]
		if s.identity == "" || !ok {
			continue
		}
		end := at.UnixNano()
		if s.setup.Load() > 0 {
			end = s.lastPacket.Load()
		}
		if s.endedAt.CompareAndSwap(0, max(1, end)) && !s.failed.Load() {
			unnoticed++
		}
	}
	return unnoticed
}

// wait waits up to d for the event stream to be connected; false when it was not (or
// following failed: the daemon refused it).
func (w *overloadWatch) wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-w.connected:
		return true
	case <-w.done:
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// loadSample is the state of a load test at one moment: the daemon's CPU counter, every
// subscriber's counters and the drops at its socket.
type loadSample struct {
	at    time.Time
	cpu   float64 // process_cpu_seconds_total; NaN when it could not be read
	c     [][2][4]float64
	drops []float64
}

// loadSampler samples the subscribers and the daemon once a second, from the start of the ramp
// to the end of the window. run is its goroutine; samples is read once run has returned.
type loadSampler struct {
	base    string
	token   string // admin token for /metrics in key mode
	subs    []*loadSubscriber
	samples []loadSample
}

func (s *loadSampler) run(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	s.take(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			s.take(ctx)
		}
	}
}

func (s *loadSampler) take(ctx context.Context) {
	smp := loadSample{cpu: math.NaN(), c: make([][2][4]float64, len(s.subs)), drops: make([]float64, len(s.subs))}
	if m, err := scrape(ctx, s.base, s.token); err == nil {
		smp.cpu = m["process_cpu_seconds_total"]
	}
	smp.at = time.Now() // after the scrape: the counters are read together with it
	drops := readUDPDrops()
	for i, sub := range s.subs {
		smp.c[i][0], smp.c[i][1] = sub.counters()
		if port := sub.localPort(); port != 0 {
			smp.drops[i] = float64(drops.port[port])
		}
	}
	s.samples = append(s.samples, smp)
}

// overloadSummary builds the overload report of a WHEP load test from its subscribers, the
// sampler's samples (the first taken at the start of the ramp), the measurement window and the
// events seen. It returns nil when nothing was refused or shed and no event was seen.
func overloadSummary(subs []*loadSubscriber, samples []loadSample, w loadWindow, watch *overloadWatch, keyMode bool, unnoticed int) *OverloadReport {
	rep := &OverloadReport{}
	watch.mu.Lock()
	rep.Events = watch.events
	if watch.err != nil {
		rep.EventsError = watch.err.Error()
	}
	named := 0
	var shedAt []time.Time
	var survivors []int
	for i, s := range subs {
		switch at, ended := s.ended(); {
		case s.refused.Load():
			rep.Refused++
		case ended:
			rep.Shed++
			shedAt = append(shedAt, at)
			if _, ok := watch.named[s.identity]; ok {
				named++
			}
			rep.ShedViewers.add(s)
		case s.setup.Load() > 0 && !s.failed.Load():
			survivors = append(survivors, i)
		}
	}
	watch.mu.Unlock()
	if rep.Refused+rep.Shed+rep.Events == 0 {
		return nil
	}
	if keyMode {
		rep.ShedNamed, rep.ShedUnnoticed = &named, &unnoticed
	}
	rep.ShedViewers.finish()
	if len(samples) < 2 {
		return rep
	}
	start := samples[0].at
	// The survivors over the measurement window: the samples closest to its ends.
	a, b := sampleAt(samples, w.start), sampleAt(samples, w.end)
	rep.Survivors.Count = len(survivors)
	rep.Survivors.BitrateKbps, rep.Survivors.LossPct = groupRate(samples[a], samples[b], survivors)

	playing := func(i int, at time.Time) bool {
		s := subs[i]
		if s.refused.Load() || s.failed.Load() || s.setup.Load() == 0 {
			return false
		}
		end, ended := s.ended()
		return !ended || end.After(at)
	}
	phase := func(a, b int) PhaseReport {
		from, to := samples[a], samples[b]
		p := PhaseReport{FromS: round1(from.at.Sub(start).Seconds()), ToS: round1(to.at.Sub(start).Seconds())}
		var through []int
		for i := range subs {
			if playing(i, to.at) && from.c[i][0][0] > 0 {
				through = append(through, i)
			}
		}
		for _, at := range shedAt {
			if !at.After(to.at) {
				p.Shed++
			}
		}
		p.Playing = len(through)
		p.BitrateKbps, p.LossPct = groupRate(from, to, through)
		p.SocketDropPct = socketDropPct(from, to, through)
		if d := to.at.Sub(from.at).Seconds(); d > 0 && !math.IsNaN(from.cpu) && !math.IsNaN(to.cpu) {
			p.Cores = round3((to.cpu - from.cpu) / d)
		}
		return p
	}
	for k := 1; k < len(samples); k++ {
		rep.Timeline = append(rep.Timeline, phase(k-1, k))
	}
	if len(shedAt) == 0 {
		return rep
	}
	first, last := shedAt[0], shedAt[0]
	for _, at := range shedAt {
		if at.Before(first) {
			first = at
		}
		if at.After(last) {
			last = at
		}
	}
	rep.FirstShedS, rep.LastShedS = round1(first.Sub(start).Seconds()), round1(last.Sub(start).Seconds())
	// A phase needs two samples at least 2 s apart.
	span := func(from, to time.Time) *PhaseReport {
		a, b := sampleAt(samples, from), sampleAt(samples, to)
		if b <= a || samples[b].at.Sub(samples[a].at) < 2*time.Second {
			return nil
		}
		p := phase(a, b)
		return &p
	}
	rep.Before = span(first.Add(-5*time.Second), first)
	rep.During = span(first, last)
	rep.After = span(last.Add(2*time.Second), w.end)
	return rep
}

// sampleAt returns the index of the last sample taken at or before t (the first sample when
// all are later).
func sampleAt(samples []loadSample, t time.Time) int {
	k := 0
	for i, s := range samples {
		if s.at.After(t) {
			break
		}
		k = i
	}
	return k
}

// groupRate returns what the chosen subscribers received between two samples: kbit/s each and
// packet loss.
func groupRate(a, b loadSample, chosen []int) (kbps, lossPct float64) {
	d := b.at.Sub(a.at).Seconds()
	if len(chosen) == 0 || d <= 0 {
		return 0, 0
	}
	var bytes, received, expected float64
	for _, i := range chosen {
		for k := range 2 {
			bytes += b.c[i][k][2] - a.c[i][k][2]
			received += b.c[i][k][0] - a.c[i][k][0]
			expected += b.c[i][k][1] - a.c[i][k][1]
		}
	}
	kbps = round1(bytes * 8 / 1000 / d / float64(len(chosen)))
	if expected > 0 {
		lossPct = round3(math.Max(0, 1-received/expected) * 100)
	}
	return kbps, lossPct
}

// socketDropPct returns the packets dropped at the chosen subscribers' sockets between two
// samples, as a share of the packets they expected.
func socketDropPct(a, b loadSample, chosen []int) float64 {
	var drops, expected float64
	for _, i := range chosen {
		drops += b.drops[i] - a.drops[i]
		for k := range 2 {
			expected += b.c[i][k][1] - a.c[i][k][1]
		}
	}
	if expected <= 0 {
		return 0
	}
	return round3(math.Max(0, drops/expected) * 100)
}

// add counts a shed subscriber's whole life, from its first video packet to its end.
func (g *GroupReport) add(s *loadSubscriber) {
	end, _ := s.ended()
	v, a := s.counters()
	g.Count++
	g.seconds += max(0, end.Sub(s.started.Add(time.Duration(s.setup.Load()))).Seconds())
	g.bytes += v[2] + a[2]
	g.received += v[0] + a[0]
	g.expected += v[1] + a[1]
}

// finish turns the sums of add into the figures: the bitrate is the bytes over the seconds
// of all the lives (a life of a few packets does not weigh like a long one).
func (g *GroupReport) finish() {
	if g.Count == 0 {
		return
	}
	if g.seconds > 0 {
		g.BitrateKbps = round1(g.bytes * 8 / 1000 / g.seconds)
	}
	if g.expected > 0 {
		g.LossPct = round3(math.Max(0, 1-g.received/g.expected) * 100)
	}
}

// print adds the overload rows to a load test's table.
func (o *OverloadReport) print(t *table) {
	events := fmt.Sprintf("%d stream.failed events with reason overloaded", o.Events)
	if o.EventsError != "" {
		events = "events not followed: " + o.EventsError
	}
	if o.ShedNamed != nil {
		events += fmt.Sprintf(", naming %d of the shed subscribers", *o.ShedNamed)
		if *o.ShedUnnoticed > 0 {
			events += fmt.Sprintf(" (%d of them had not seen their session end)", *o.ShedUnnoticed)
		}
	}
	t.row("overload", fmt.Sprintf("%d refused (503), %d shed by the daemon; %s", o.Refused, o.Shed, events))
	t.row("survivors", fmt.Sprintf("%d: %.0f kbit/s each, loss %.3f %% (over the window)", o.Survivors.Count, o.Survivors.BitrateKbps, o.Survivors.LossPct))
	if o.Shed > 0 {
		t.row("shed", fmt.Sprintf("%d: %.0f kbit/s each, loss %.3f %% until shed, between %.1f s and %.1f s after the ramp began",
			o.ShedViewers.Count, o.ShedViewers.BitrateKbps, o.ShedViewers.LossPct, o.FirstShedS, o.LastShedS))
	}
	for _, p := range []struct {
		name string
		p    *PhaseReport
	}{{"before shedding", o.Before}, {"while shedding", o.During}, {"after shedding", o.After}} {
		if p.p != nil {
			t.row(p.name, p.p.String())
		}
	}
}

func (p *PhaseReport) String() string {
	return fmt.Sprintf("%.0f-%.0f s: %d playing, %.0f kbit/s each, loss %.3f %% (%.3f %% at their sockets), daemon %.3f cores",
		p.FromS, p.ToS, p.Playing, p.BitrateKbps, p.LossPct, p.SocketDropPct, p.Cores)
}
