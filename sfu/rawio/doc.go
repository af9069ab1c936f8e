// Package rawio makes the non-blocking system calls of the daemon's media sockets raw, inside
// a syscall.RawConn Read or Write callback. Every system call entered through the scheduler
// wakes its monitor when the process was idle, which then polls at its fastest rate for a
// while; sockets that see a packet every few milliseconds kept it doing that for ever. A
// non-blocking call never sleeps, so it need not tell the scheduler; EAGAIN still parks the
// caller in the poller, and deadlines and Close hold as for any read or write.
package rawio
