package sfu

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Limits is the `limits:` section: how the daemon protects the sessions it has when it runs out
// of CPU or memory.
type Limits struct {
	// CPUBudget is the share of the machine's cores (0..1) the daemon may use before new viewers
	// are refused (default 0.9).
	CPUBudget float64 `yaml:"cpu_budget"`
	// Shed closes the newest viewers, with stream.failed reason overloaded, when the daemon
	// cannot keep up (many viewers' queues overflowing at once), instead of letting every viewer
	// lose packets.
	Shed bool `yaml:"shed"`
	// MemoryMB is the daemon's memory budget in MiB. 0 (the default) takes the limit of the
	// memory cgroup the daemon runs in, if it has one, and otherwise sets no budget; -1 sets
	// none. The Go runtime's memory limit (GOMEMLIMIT, unless set in the environment) is put
	// at 90 % of it, so that the collector works harder before the kernel's OOM killer acts.
	MemoryMB int `yaml:"memory_mb"`
	// MemoryHigh is the share of the budget (0..1, default 0.8) above which new sessions
	// (publishers, viewers, egress) are refused; those already admitted keep being served.
	MemoryHigh float64 `yaml:"memory_high"`
}

// DefaultLimits returns the documented defaults.
func DefaultLimits() Limits { return Limits{CPUBudget: 0.9, Shed: true, MemoryHigh: defaultMemoryHigh} }

// Validate reports the first invalid value.
func (l Limits) Validate() error {
	switch {
	case l.CPUBudget <= 0 || l.CPUBudget > 1:
		return fmt.Errorf("cpu_budget: %v is not a share of the cores between 0 and 1", l.CPUBudget)
	case l.MemoryMB < -1:
		return fmt.Errorf("memory_mb: %d is neither a budget in MiB, 0 (the cgroup's limit) nor -1 (none)", l.MemoryMB)
	case l.MemoryHigh < 0 || l.MemoryHigh > 1:
		return fmt.Errorf("memory_high: %v is not a share of the budget between 0 and 1", l.MemoryHigh)
	}
	return nil
}

// ErrOverloaded refuses a new viewer, or ends a shed one.
var ErrOverloaded = errors.New("the server is overloaded")

// shedCooldown refuses new viewers for a while after shedding, so that the load that caused it
// is not recreated at once.
const shedCooldown = 10 * time.Second

// shedSettle is how long after shedding the hub waits before it sheds again: the sessions it
// closed take CPU to tear down, and their drops are not a sign that too few were shed.
const shedSettle = 1500 * time.Millisecond

// congestionHold is how long the hub stays congested after it last saw the send path drop
// packets or shed viewers: long enough for the viewers' retransmission requests about the
// packets lost meanwhile to be ignored.
const congestionHold = 3 * time.Second

// lagLimit is how long a packet may wait in a viewer's queue before the viewer counts as
// behind: the daemon is not keeping up with it, though its queue has not overflowed yet.
const lagLimit = 500 * time.Millisecond

// sendDropShare is the share of the packets an edge tried to send in one second that, dropped
// by its send path, means the daemon cannot keep up (1 %); minSendDrops ignores a handful.
const (
	sendDropShare = 0.01
	minSendDrops  = 50
)

// SendCounter returns the cumulative packets an edge's send path sent and the packets it
// dropped because it could not send them in time (a full send queue). See Hub.WatchSend.
type SendCounter func() (sent, dropped uint64)

// ProcessCPU returns the CPU time this process has used (user + system).
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadState is the hub's view of its own load, updated by the housekeeping goroutine.
type loadState struct {
	lastCPU  time.Duration
	lastAt   time.Time
	usage    atomic.Uint64 // float64 bits: share of the machine's cores used in the last second
	lastShed atomic.Int64  // unix nanoseconds
	// congestedUntil is when the last sign of congestion (send drops, viewers behind, shedding)
	// stops counting.
	congestedUntil atomic.Int64 // unix nanoseconds

	sendMu   sync.Mutex
	senders  []SendCounter
	lastSent uint64 // the senders' totals at the last check (the hub's goroutine only)
	lastDrop uint64
}

// WatchSend adds an edge's send counter to the hub's overload check: when the edge drops more
// than 1 % of what it sends in a second, the daemon lacks the CPU to serve its viewers, and the
// newest are shed as when their queues overflow. Safe for concurrent use; f is called from the
// hub's goroutine once a second and must be cheap.
func (h *Hub) WatchSend(f SendCounter) {
	h.load.sendMu.Lock()
	h.load.senders = append(h.load.senders, f)
	h.load.sendMu.Unlock()
}

// Congested reports whether the daemon recently could not keep up: in the last 3 s a send path
// dropped packets, many viewers fell behind, or viewers were shed. Optional work (answering retransmission
// requests) should be skipped meanwhile: it would cost the CPU that is missing and its packets
// would be dropped too. Safe for concurrent use; cheap.
func (h *Hub) Congested() bool {
	return h.clock().UnixNano() < h.load.congestedUntil.Load()
}

// sendDrops returns what the watched send paths sent and dropped since the last call (the
// hub's goroutine only).
func (h *Hub) sendDrops() (sent, dropped uint64) {
	h.load.sendMu.Lock()
	senders := h.load.senders
	h.load.sendMu.Unlock()
	var totalSent, totalDrop uint64
	for _, f := range senders {
		s, d := f()
		totalSent += s
		totalDrop += d
	}
	sent, dropped = totalSent-h.load.lastSent, totalDrop-h.load.lastDrop
	h.load.lastSent, h.load.lastDrop = totalSent, totalDrop
	return sent, dropped
}

// CPUUsage returns the share of the machine's cores the daemon used in the last second.
func (h *Hub) CPUUsage() float64 { return math.Float64frombits(h.load.usage.Load()) }

// Overloaded reports whether a new viewer should be refused: the CPU budget is spent, or
// viewers were shed less than 10 s ago.
func (h *Hub) Overloaded() bool {
	if h.CPUUsage() >= h.opts.Limits.CPUBudget {
		return true
	}
	last := h.load.lastShed.Load()
	return last != 0 && h.clock().Sub(time.Unix(0, last)) < shedCooldown
}

// measureLoad samples the process CPU once a second.
func (h *Hub) measureLoad(now time.Time) {
	cpu := h.opts.CPU()
	if !h.load.lastAt.IsZero() {
		if wall := now.Sub(h.load.lastAt); wall > 0 {
			share := float64(cpu-h.load.lastCPU) / float64(wall) / float64(runtime.NumCPU())
			h.load.usage.Store(math.Float64bits(share))
		}
	}
	h.load.lastCPU, h.load.lastAt = cpu, now
}

// shedCount is how many of the viewers one round of shedding closes: 5 %, or more when the
// send path dropped more (half its drop share, as its packets include the backlog of the
// time it could not send), at most 20 %; at least one.
func shedCount(viewers int, sent, dropped uint64) int {
	share := 0.05
	if total := sent + dropped; total > 0 {
		share = min(0.20, max(share, float64(dropped)/float64(total)/2))
	}
	return max(1, int(math.Ceil(share*float64(viewers)-1e-9)))
}

// shed closes the newest viewers when many viewers fell behind since the last check (their
// queues overflowed, or held a packet longer than lagLimit), or a send path dropped more than
// 1 % of its packets: with non-blocking network writes that only happens when the daemon lacks
// CPU, and dropping packets for everyone would spoil every viewer. It runs once a second on
// the hub's goroutine.
func (h *Hub) shed() {
	now := h.clock()
	sent, dropped := h.sendDrops()
	sendCongested := dropped >= minSendDrops && float64(dropped) >= sendDropShare*float64(sent+dropped)
	type viewer struct {
		p        *Participant
		joinedAt time.Time
	}
	var viewers []viewer
	subs, behind := 0, 0
	for _, r := range h.Rooms() {
		for _, p := range r.Participants() {
			isViewer := false
			for _, st := range p.Streams() {
				isViewer = isViewer || st.spec.Direction == DirectionPlay
			}
			for _, s := range p.Subscriptions() {
				subs++
				d, lag := s.dropped.Load(), s.lag.Swap(0)
				if d > s.shedSeen || lag > int64(lagLimit) {
					behind++
				}
				s.shedSeen = d
			}
			if isViewer {
				viewers = append(viewers, viewer{p, p.joinedAt})
			}
		}
	}
	overloaded := sendCongested || behind >= max(2, subs/10)
	if overloaded {
		h.load.congestedUntil.Store(now.Add(congestionHold).UnixNano())
	}
	if !h.opts.Limits.Shed || len(viewers) == 0 || !overloaded {
		return
	}
	if last := h.load.lastShed.Load(); last != 0 && now.Sub(time.Unix(0, last)) < shedSettle {
		return
	}
	sort.Slice(viewers, func(i, j int) bool { return viewers[i].joinedAt.After(viewers[j].joinedAt) })
	n := shedCount(len(viewers), sent, dropped)
	h.log.Warn("overloaded: shedding the newest viewers", "viewers", len(viewers), "shed", n,
		"subscriptions_behind", behind, "send_dropped", dropped, "sent", sent, "cpu", h.CPUUsage())
	h.load.lastShed.Store(now.UnixNano())
	h.load.congestedUntil.Store(now.Add(congestionHold).UnixNano())
	for _, v := range viewers[:n] {
		v.p.leave(ReasonOverloaded, ErrOverloaded) // the housekeeping never waits for the event log
	}
}
