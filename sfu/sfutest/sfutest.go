// Package sfutest holds helpers shared by tests of several packages: external tools that a
// test needs, waiting for conditions with a deadline, loopback ports, and a test hub. It is
// imported only by tests, and not by package sfu's own (it imports sfu).
package sfutest

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
)

// RequireTool returns the path of an external program a test needs. When it is missing the
// test is skipped, except under CI=true, where it fails: CI must install what tests need.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required under CI=true but is not installed (.ci/run installs it): %v", name, err)
	}
	t.Skipf("%s is not installed; install it (see .ci/run) to run this test", name)
	return ""
}

// WaitFor polls cond every 10 ms until it holds, failing the test after d.
func WaitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// NewHub returns a hub for tests (default config, housekeeping every 50 ms) with an in-memory
// emitter holding its events, logging to log when not nil. It starts nothing: the test runs it,
// or calls RunHub.
func NewHub(t testing.TB, log *slog.Logger) (*sfu.Hub, *sfu.LocalEmitter) {
	t.Helper()
	em := sfu.NewLocalEmitter(0, nil)
	h, err := sfu.NewHub(sfu.Options{Config: sfu.DefaultConfig(), Emitter: em, Tick: 50 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return h, em
}

// RunHub runs h's housekeeping until the test ends, then stops it and waits for it.
func RunHub(t testing.TB, h *sfu.Hub) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = h.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// SeqJumps counts the sequence numbers (in arrival order) that are not the previous one plus
// one: losses, reorders and duplicates alike.
func SeqJumps(seqs []uint16) int {
	n := 0
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			n++
		}
	}
	return n
}

// MountTmpfs mounts a tmpfs of size ("16m") on a new directory for the test, unmounted at its
// end: a disk that really fills up. It needs root; without it the test fails under CI=true and
// is skipped elsewhere.
func MountTmpfs(t testing.TB, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mount tmpfs: %v: %s", err, out)
		}
		t.Skipf("mount tmpfs (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	return dir
}
