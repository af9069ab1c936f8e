package recorder

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// A write that would leave less than the reserve free fails like a full disk, and writes
// nothing; one that leaves the reserve goes through.
func TestReserveKeepsSpaceFree(t *testing.T) {
	dir := t.TempDir()
	free := int64(10 << 20)
	fs := reserveFS{FS: OSFS{}, root: dir, min: 8 << 20, free: func(string) (int64, error) { return free, nil }}
	f, err := fs.Create(filepath.Join(dir, "a", "cam.mp4"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(make([]byte, 1<<20)); err != nil {
		t.Fatalf("a write leaving 9 MiB free: %v", err)
	}
	free = 9 << 20
	n, err := f.Write(make([]byte, 2<<20))
	if n != 0 || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("a write into the reserve: %d, %v; want 0, ENOSPC", n, err)
	}
	if info := fileError(err); info.Code != CodeDiskFull {
		t.Errorf("classified %+v", info)
	}
	if st, err := os.Stat(filepath.Join(dir, "a", "cam.mp4")); err != nil || st.Size() != 1<<20 {
		t.Errorf("file after the refused write: %v %v", st, err)
	}
	// the real file system: a reserve larger than the disk refuses at once
	real := reserveFS{FS: OSFS{}, root: dir, min: 1 << 62, free: freeBytes}
	g, err := real.Create(filepath.Join(dir, "b.mp4"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if _, err := g.Write([]byte("x")); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("a reserve larger than the disk: %v", err)
	}
}
