package main

import (
	"errors"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/cgroup"
)

// goMemLimitShare is the share of the memory budget given to the Go runtime as its soft limit:
// the rest is for what the runtime does not count (ffmpeg children, page cache of recordings).
const goMemLimitShare = 0.9

// memoryBudget resolves limits.memory_mb: an explicit budget, the memory cgroup's limit (0), or
// none (-1, or 0 outside a limited cgroup). It returns the budget in bytes and the function that
// measures use: the Go runtime's memory, or the cgroup's working set (which counts child
// processes and dirty page cache) when that is larger. With a budget, and unless GOMEMLIMIT is
// set in the environment, it sets the Go runtime's memory limit to 90 % of the budget.
func memoryBudget(mb int, log *slog.Logger) (uint64, func() uint64) {
	cg, err := cgroup.Self()
	if err != nil && !errors.Is(err, cgroup.ErrNoLimit) {
		log.Debug("no memory cgroup", "error", err)
	}
	var budget uint64
	switch {
	case mb > 0:
		budget = uint64(mb) << 20
	case mb == 0 && cg != nil:
		budget, _ = cg.Limit()
	}
	if cg != nil {
		if l, err := cg.Limit(); err == nil && budget > l {
			log.Warn("limits.memory_mb is over the memory cgroup's limit; the OOM killer acts first",
				"memory_mb", mb, "cgroup_limit_mb", l>>20)
		}
	}
	if budget == 0 {
		return 0, nil
	}
	measure := sfu.GoMemory
	if cg != nil {
		measure = func() uint64 {
			used := sfu.GoMemory()
			if ws, err := cg.Usage(); err == nil && ws > used {
				used = ws
			}
			return used
		}
	}
	fromEnv := os.Getenv("GOMEMLIMIT") != ""
	if !fromEnv {
		debug.SetMemoryLimit(int64(float64(budget) * goMemLimitShare))
	}
	log.Info("memory budget", "budget_mb", budget>>20, "cgroup", cg != nil,
		"go_limit_mb", debug.SetMemoryLimit(-1)>>20, "go_limit_from_env", fromEnv)
	return budget, measure
}
