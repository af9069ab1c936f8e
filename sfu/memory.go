package sfu

import (
	"fmt"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// defaultMemoryHigh is the share of the memory budget above which new sessions are refused.
const defaultMemoryHigh = 0.8

// OverloadError refuses a new session because the daemon is short of a resource. It matches
// ErrOverloaded with errors.Is.
type OverloadError struct {
	// Resource is what is short: "memory" (the only one so far: CPU refusals are ErrOverloaded).
	Resource string
	// Used and Mark are the bytes in use and the high-water mark they passed; Budget is
	// limits.memory_mb in bytes.
	Used, Mark, Budget uint64
}

func (e *OverloadError) Error() string {
	return fmt.Sprintf("the server is overloaded: its %s use, %d MiB, is over %d MiB (of a %d MiB budget); try again later",
		e.Resource, e.Used>>20, e.Mark>>20, e.Budget>>20)
}

// Is makes an OverloadError match ErrOverloaded.
func (e *OverloadError) Is(target error) bool { return target == ErrOverloaded }

// GoMemory returns the memory the Go runtime holds from the OS: everything it mapped less the
// heap it returned. It reads runtime/metrics, which stops nothing; call it about once a second.
func GoMemory() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 || s[1].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64() - s[1].Value.Uint64()
}

// memoryState is the hub's memory admission: the budget, the last sample of what is used, and
// the refusals.
type memoryState struct {
	budget, mark uint64 // bytes; 0: no memory admission
	used         atomic.Uint64
	refusals     atomic.Uint64
	unreported   atomic.Uint64 // refusals not reported by an event (over the event rate)

	mu     sync.Mutex // guards the event bucket
	tokens float64
	at     time.Time
}

// Refusal events are rate limited: a burst of 10, then one a second, so that a flood of
// refused clients cannot flood the event log (the refusals metric counts them all).
const (
	overloadEventBurst = 10
	overloadEventRate  = 1.0
)

// MemoryUsage returns the memory the daemon used at the last sample (about once a second), its
// budget, and the high-water mark above which new sessions are refused; budget 0 means memory
// admission is off.
func (h *Hub) MemoryUsage() (used, budget, mark uint64) {
	return h.mem.used.Load(), h.mem.budget, h.mem.mark
}

// Refusals returns how many sessions the hub refused for want of memory, and how many of those
// no auth.failed event reported (over the event rate).
func (h *Hub) Refusals() (total, unreported uint64) {
	return h.mem.refusals.Load(), h.mem.unreported.Load()
}

// Admit applies the memory admission of Join to a session that joins no room (a recording, a
// broadcast): an *OverloadError while memory is over its high-water mark, reported like a
// refused Join. Safe for concurrent use.
func (h *Hub) Admit(spec ParticipantSpec) error { return h.admitMemory(spec) }

// measureMemory samples the memory in use (the hub's goroutine, once a second).
func (h *Hub) measureMemory() {
	if h.mem.budget == 0 {
		return
	}
	h.mem.used.Store(h.opts.Memory())
}

// admitMemory refuses a new session (an *OverloadError) while the memory in use is over the
// high-water mark; sessions already admitted are not touched. The refusal is reported as
// auth.failed with reason overloaded and error code memory.
func (h *Hub) admitMemory(spec ParticipantSpec) error {
	used := h.mem.used.Load()
	if h.mem.budget == 0 || used < h.mem.mark {
		return nil
	}
	err := &OverloadError{Resource: "memory", Used: used, Mark: h.mem.mark, Budget: h.mem.budget}
	h.mem.refusals.Add(1)
	if !h.allowOverloadEvent() {
		h.mem.unreported.Add(1)
		return err
	}
	h.log.Warn("memory over its high-water mark: session refused", "kind", spec.Kind, "remote_addr", spec.RemoteAddr,
		"used_mb", used>>20, "mark_mb", h.mem.mark>>20, "budget_mb", h.mem.budget>>20)
	h.emit.Emit(&Event{Type: EventAuthFailed, Reason: ReasonOverloaded, Protocol: spec.Kind, RemoteAddr: spec.RemoteAddr,
		Error: &ErrorInfo{Code: "memory", Message: err.Error()}})
	return err
}

func (h *Hub) allowOverloadEvent() bool {
	now := h.clock()
	h.mem.mu.Lock()
	defer h.mem.mu.Unlock()
	if h.mem.at.IsZero() {
		h.mem.tokens = overloadEventBurst
	} else {
		h.mem.tokens = min(overloadEventBurst, h.mem.tokens+now.Sub(h.mem.at).Seconds()*overloadEventRate)
	}
	h.mem.at = now
	if h.mem.tokens < 1 {
		return false
	}
	h.mem.tokens--
	return true
}
