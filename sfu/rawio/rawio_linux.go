//go:build linux

package rawio

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// Call makes one raw system call for a RawConn callback, again after EINTR. ok is false on
// EAGAIN: the callback then returns false, and the poller waits until the socket is ready.
func Call(trap, a1, a2, a3, a4, a5, a6 uintptr) (r uintptr, errno syscall.Errno, ok bool) {
	for {
		r, _, e := unix.RawSyscall6(trap, a1, a2, a3, a4, a5, a6)
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, 0, false
		}
		return r, e, true
	}
}
