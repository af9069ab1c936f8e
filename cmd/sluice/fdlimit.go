package main

import (
	"log/slog"
	"syscall"
)

// httpConnCap is the cap on open HTTP connections: http.max_conns, or a quarter of the
// file-descriptor limit when it is 0, never more than half the limit, so that media sockets,
// recordings and the event store always keep a reserve. (The Go runtime has already raised
// the soft limit to the hard one at start.)
func httpConnCap(configured int, log *slog.Logger) int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur == 0 || lim.Cur > 1<<30 {
		if configured == 0 {
			return 4096
		}
		return configured
	}
	fds := int(lim.Cur) //nolint:gosec // bounded above
	if configured == 0 {
		return max(fds/4, 16)
	}
	if configured > fds/2 {
		log.Warn("http.max_conns is over half the file-descriptor limit; capped to keep a reserve for media and the event store",
			"max_conns", configured, "fd_limit", fds, "cap", fds/2)
		return max(fds/2, 16)
	}
	return configured
}
