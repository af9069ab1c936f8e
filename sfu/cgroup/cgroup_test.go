package cgroup

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestFind(t *testing.T) {
	const mountinfo = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	for _, tc := range []struct {
		name      string
		cgroup    string
		files     map[string]string // relative to the fake root
		wantLimit uint64            // 0: ErrNoLimit
		wantUsage uint64
	}{
		{
			name:   "v1 limit",
			cgroup: "4:memory:/a/b\n0::/\n",
			files: map[string]string{
				"sys/fs/cgroup/memory/a/b/memory.stat":           "cache 10\ntotal_inactive_file 100\nhierarchical_memory_limit 268435456\n",
				"sys/fs/cgroup/memory/a/b/memory.usage_in_bytes": "1000\n",
			},
			wantLimit: 256 << 20, wantUsage: 900,
		},
		{
			name:   "v1 unlimited, v2 parent limit",
			cgroup: "4:memory:/a\n0::/x/y\n",
			files: map[string]string{
				"sys/fs/cgroup/memory/a/memory.stat":       "hierarchical_memory_limit 9223372036854771712\n",
				"sys/fs/cgroup/unified/x/memory.max":       "1048576\n",
				"sys/fs/cgroup/unified/x/y/memory.max":     "max\n",
				"sys/fs/cgroup/unified/x/y/memory.current": "5000\n",
				"sys/fs/cgroup/unified/x/y/memory.stat":    "anon 10\ninactive_file 1000\n",
			},
			wantLimit: 1 << 20, wantUsage: 4000,
		},
		{
			name:   "no limit",
			cgroup: "4:memory:/a\n0::/\n",
			files: map[string]string{
				"sys/fs/cgroup/memory/a/memory.stat": "hierarchical_memory_limit 9223372036854771712\n",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for name, body := range tc.files {
				p := filepath.Join(root, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			cg, mi := filepath.Join(root, "cgroup"), filepath.Join(root, "mountinfo")
			_ = os.WriteFile(cg, []byte(tc.cgroup), 0o644)
			_ = os.WriteFile(mi, []byte(mountinfo), 0o644)
			m, err := find(cg, mi, root)
			if tc.wantLimit == 0 {
				if !errors.Is(err, ErrNoLimit) {
					t.Fatalf("got %v, want ErrNoLimit", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l, err := m.Limit(); err != nil || l != tc.wantLimit {
				t.Errorf("limit %d, %v; want %d", l, err, tc.wantLimit)
			}
			if u, err := m.Usage(); err != nil || u != tc.wantUsage {
				t.Errorf("usage %d, %v; want %d", u, err, tc.wantUsage)
			}
		})
	}
}
