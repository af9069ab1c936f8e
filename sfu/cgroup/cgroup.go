// Package cgroup reads the memory limit and usage of the cgroup the process runs in, under
// cgroup v2 (memory.max, memory.current) or the v1 memory controller
// (memory.limit_in_bytes, memory.usage_in_bytes), so that the daemon can budget its memory
// below the point where the kernel's OOM killer acts.
//
// Specification: Documentation/admin-guide/cgroup-v2.rst and cgroup-v1/memory.rst in the
// Linux sources.
package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrNoLimit means the process runs in no memory cgroup with a limit.
var ErrNoLimit = errors.New("no cgroup memory limit")

// Memory is the memory controller of one cgroup. Its methods read the kernel's files and are
// safe for concurrent use; a Memory holds no open files.
type Memory struct {
	dir string // the cgroup's directory
	top string // v2: the hierarchy's mount point, where the walk up the ancestors stops
	v1  bool
}

// unlimited is what v1 reports without a limit (PAGE_COUNTER_MAX pages, rounded): any value
// this large is no limit.
const unlimited = 1 << 62

// Self finds the memory cgroup of this process. It returns ErrNoLimit when there is none, or
// when neither it nor (v2) one of its ancestors has a limit.
func Self() (*Memory, error) {
	return find("/proc/self/cgroup", "/proc/self/mountinfo", "")
}

// find locates the memory cgroup described by the cgroup and mountinfo files; root prefixes the
// mount points (tests).
func find(cgroupFile, mountinfoFile, root string) (*Memory, error) {
	cg, err := os.ReadFile(cgroupFile)
	if err != nil {
		return nil, err
	}
	mi, err := os.ReadFile(mountinfoFile)
	if err != nil {
		return nil, err
	}
	var v1Path, v2Path string
	hasV1, hasV2 := false, false
	for _, line := range strings.Split(string(cg), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			v2Path, hasV2 = parts[2], true
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "memory" {
				v1Path, hasV1 = parts[2], true
			}
		}
	}
	var v1Mount, v2Mount, v1MountRoot, v2MountRoot string
	for _, line := range strings.Split(string(mi), "\n") {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 {
			continue
		}
		switch {
		case g[0] == "cgroup2" && v2Mount == "":
			v2Mount, v2MountRoot = f[4], f[3]
		case g[0] == "cgroup" && v1Mount == "" && hasOption(g[2], "memory"):
			v1Mount, v1MountRoot = f[4], f[3]
		}
	}
	if hasV1 && v1Mount != "" {
		m := &Memory{dir: join(root, v1Mount, v1MountRoot, v1Path), v1: true}
		if l, err := m.Limit(); err == nil && l > 0 {
			return m, nil
		}
	}
	if hasV2 && v2Mount != "" {
		m := &Memory{dir: join(root, v2Mount, v2MountRoot, v2Path), top: filepath.Join(root, v2Mount)}
		if l, err := m.Limit(); err == nil && l > 0 {
			return m, nil
		}
	}
	return nil, ErrNoLimit
}

func hasOption(opts, name string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == name {
			return true
		}
	}
	return false
}

// join places a cgroup path under its mount point. Inside a cgroup namespace the mount's root
// is the namespace's root, which /proc/self/cgroup paths are relative to already; outside one,
// the mount root is "/".
func join(root, mount, mountRoot, path string) string {
	if mountRoot != "/" {
		if rel, err := filepath.Rel(mountRoot, path); err == nil && !strings.HasPrefix(rel, "..") {
			path = rel
		}
	}
	return filepath.Join(root, mount, filepath.Clean("/"+path))
}

// Dir returns the cgroup's directory.
func (m *Memory) Dir() string { return m.dir }

// Limit returns the cgroup's memory limit in bytes: the lowest of its own and its ancestors'
// (v1 reports that as hierarchical_memory_limit; under v2 the ancestors are read up to the
// mount point). It returns ErrNoLimit when there is none.
func (m *Memory) Limit() (uint64, error) {
	if m.v1 {
		stat, err := m.stat()
		if err != nil {
			return 0, err
		}
		l, ok := stat["hierarchical_memory_limit"]
		if !ok {
			if l, err = readUint(filepath.Join(m.dir, "memory.limit_in_bytes")); err != nil {
				return 0, err
			}
		}
		if l >= unlimited {
			return 0, ErrNoLimit
		}
		return l, nil
	}
	var lowest uint64
	for dir := m.dir; ; dir = filepath.Dir(dir) {
		raw, err := os.ReadFile(filepath.Join(dir, "memory.max"))
		if err != nil {
			break // the root cgroup has no memory.max
		}
		if s := strings.TrimSpace(string(raw)); s != "max" {
			l, err := strconv.ParseUint(s, 10, 64)
			if err == nil && (lowest == 0 || l < lowest) {
				lowest = l
			}
		}
		if dir == m.top || len(dir) <= len(m.top) {
			break
		}
	}
	if lowest == 0 || lowest >= unlimited {
		return 0, ErrNoLimit
	}
	return lowest, nil
}

// Usage returns the memory the cgroup's processes use that the kernel cannot simply drop: its
// charged memory less its inactive file cache (the working set, as container runtimes count
// it). It includes child processes (ffmpeg) and the page cache of files being written.
func (m *Memory) Usage() (uint64, error) {
	name, inactive := "memory.current", "inactive_file"
	if m.v1 {
		name, inactive = "memory.usage_in_bytes", "total_inactive_file"
	}
	used, err := readUint(filepath.Join(m.dir, name))
	if err != nil {
		return 0, err
	}
	stat, err := m.stat()
	if err != nil {
		return used, nil //nolint:nilerr // the usage alone is still an upper bound
	}
	if in := stat[inactive]; in < used {
		used -= in
	}
	return used, nil
}

func (m *Memory) stat() (map[string]uint64, error) {
	raw, err := os.ReadFile(filepath.Join(m.dir, "memory.stat"))
	if err != nil {
		return nil, err
	}
	stat := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil {
			stat[k] = n
		}
	}
	return stat, nil
}

func readUint(path string) (uint64, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(raw)), 10, 64)
}
