package sfutest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// MemoryCgroup is a cgroup v1 memory cgroup made for a test, a child of the test process's own
// (so that the limits above it still hold).
type MemoryCgroup struct {
	Dir string
}

// NewMemoryCgroup makes a memory cgroup limited to limit bytes and removes it when the test
// ends. Without a writable cgroup v1 memory hierarchy (needs root) the test is skipped, except
// under CI=true, where it fails.
func NewMemoryCgroup(t testing.TB, limit uint64) *MemoryCgroup {
	t.Helper()
	dir, err := newMemoryCgroup(t.Name(), limit)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("a writable cgroup v1 memory hierarchy is required under CI=true: %v", err)
		}
		t.Skipf("no writable cgroup v1 memory hierarchy (needs root): %v", err)
	}
	cg := &MemoryCgroup{Dir: dir}
	t.Cleanup(func() {
		// the test's processes have ended by now (cleanups run last-registered first); the
		// kernel refuses to remove a cgroup with members for a moment after they exit
		deadline := time.Now().Add(10 * time.Second)
		for os.Remove(dir) != nil && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
	})
	return cg
}

func newMemoryCgroup(name string, limit uint64) (string, error) {
	raw, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	self := ""
	for _, line := range strings.Split(string(raw), "\n") {
		if parts := strings.SplitN(line, ":", 3); len(parts) == 3 && parts[1] == "memory" {
			self = parts[2]
		}
	}
	const mount = "/sys/fs/cgroup/memory"
	if self == "" {
		return "", fmt.Errorf("this process is in no cgroup v1 memory hierarchy")
	}
	name = strings.NewReplacer("/", "-", " ", "-").Replace(name)
	dir := filepath.Join(mount, filepath.Clean("/"+self), fmt.Sprintf("sluice-%s-%d", name, os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "memory.limit_in_bytes"), []byte(strconv.FormatUint(limit, 10)), 0o644); err != nil {
		_ = os.Remove(dir)
		return "", err
	}
	return dir, nil
}

// Prefix is a command prefix that runs the command after it in the cgroup from its first
// instruction: sh puts itself in the cgroup, then execs the command.
func (c *MemoryCgroup) Prefix() []string {
	return []string{"sh", "-c", `echo $$ > "$0" && exec "$@"`, filepath.Join(c.Dir, "cgroup.procs")}
}

// Stat returns a number from memory.stat (hierarchical figures are total_*), or 0.
func (c *MemoryCgroup) Stat(key string) uint64 { return c.field("memory.stat", key) }

// OOMKills returns how many processes the kernel's OOM killer ended in the cgroup.
func (c *MemoryCgroup) OOMKills() uint64 { return c.field("memory.oom_control", "oom_kill") }

// Usage returns the cgroup's memory.usage_in_bytes and memory.max_usage_in_bytes.
func (c *MemoryCgroup) Usage() (now, peak uint64) {
	read := func(name string) uint64 {
		raw, _ := os.ReadFile(filepath.Join(c.Dir, name))
		n, _ := strconv.ParseUint(strings.TrimSpace(string(raw)), 10, 64)
		return n
	}
	return read("memory.usage_in_bytes"), read("memory.max_usage_in_bytes")
}

func (c *MemoryCgroup) field(file, key string) uint64 {
	raw, _ := os.ReadFile(filepath.Join(c.Dir, file))
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok && k == key {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}
