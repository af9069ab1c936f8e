package recorder

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// reserveFS creates files whose writes fail like a full disk (ENOSPC) once the file system of
// root would keep less than min bytes free: recordings stop short of a full disk, so that what
// shares it (the event log, above all the recording.failed event) still has room.
type reserveFS struct {
	FS
	root string
	min  int64
	free func(path string) (int64, error)
}

func (r reserveFS) Create(path string) (File, error) {
	f, err := r.FS.Create(path)
	if err != nil {
		return nil, err
	}
	return &reserveFile{File: f, fs: r, name: filepath.Base(path)}, nil
}

type reserveFile struct {
	File
	fs   reserveFS
	name string
}

func (f *reserveFile) Write(p []byte) (int, error) {
	free, err := f.fs.free(f.fs.root)
	if err == nil && free-int64(len(p)) < f.fs.min {
		return 0, &os.PathError{Op: "write", Path: f.name, Err: fmt.Errorf("%w (recording.min_free_mb is kept free)", syscall.ENOSPC)}
	}
	return f.File.Write(p)
}

// freeBytes returns the space left to unprivileged users on the file system of path.
func freeBytes(path string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil //nolint:gosec // block counts fit in int64
}
