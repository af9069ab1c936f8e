package sfu

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sort"
	"sync/atomic"
	"syscall"
	"time"
)

// Limits is the `limits:` section: how the daemon protects the viewers it has when it runs out
// of CPU.
type Limits struct {
	// CPUBudget is the share of the machine's cores (0..1) the daemon may use before new viewers
	// are refused (default 0.9).
	CPUBudget float64 `yaml:"cpu_budget"`
	// Shed closes the newest viewers, with stream.failed reason overloaded, when the daemon
	// cannot keep up (many viewers' queues overflowing at once), instead of letting every viewer
	// lose packets.
	Shed bool `yaml:"shed"`
}

// DefaultLimits returns the documented defaults.
func DefaultLimits() Limits { return Limits{CPUBudget: 0.9, Shed: true} }

// Validate reports the first invalid value.
func (l Limits) Validate() error {
	if l.CPUBudget <= 0 || l.CPUBudget > 1 {
		return fmt.Errorf("cpu_budget: %v is not a share of the cores between 0 and 1", l.CPUBudget)
	}
	return nil
}

// ErrOverloaded refuses a new viewer, or ends a shed one.
var ErrOverloaded = errors.New("the server is overloaded")

// shedCooldown refuses new viewers for a while after shedding, so that the load that caused it
// is not recreated at once.
const shedCooldown = 10 * time.Second

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

// shed closes the newest viewers when many viewers' queues overflowed since the last check:
// with non-blocking network writes that only happens when the daemon lacks CPU, and dropping
// packets for everyone would spoil every viewer. It runs once a second on the hub's goroutine.
func (h *Hub) shed() {
	type viewer struct {
		p        *Participant
		joinedAt time.Time
	}
	var viewers []viewer
	subs, overflowing := 0, 0
	for _, r := range h.Rooms() {
		for _, p := range r.Participants() {
			isViewer := false
			for _, st := range p.Streams() {
				isViewer = isViewer || st.spec.Direction == DirectionPlay
			}
			for _, s := range p.Subscriptions() {
				subs++
				d := s.dropped.Load()
				if d > s.shedSeen {
					overflowing++
				}
				s.shedSeen = d
			}
			if isViewer {
				viewers = append(viewers, viewer{p, p.joinedAt})
			}
		}
	}
	if !h.opts.Limits.Shed || len(viewers) == 0 || overflowing < max(2, subs/10) {
		return
	}
	sort.Slice(viewers, func(i, j int) bool { return viewers[i].joinedAt.After(viewers[j].joinedAt) })
	n := max(1, len(viewers)/20) // 5% at a time, newest first
	h.log.Warn("overloaded: shedding the newest viewers", "viewers", len(viewers), "shed", n,
		"overflowing_subscriptions", overflowing, "cpu", h.CPUUsage())
	h.load.lastShed.Store(h.clock().UnixNano())
	for _, v := range viewers[:n] {
		v.p.Close(ReasonOverloaded, ErrOverloaded)
	}
}
