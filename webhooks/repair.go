package webhooks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// The embedded store can fail for reasons that pass: a full disk (ENOSPC) or a process out of
// file descriptors (EMFILE, ENFILE). A JetStream file store keeps its first write error and
// refuses every later write, so after such a fault the log would stay broken until the daemon
// restarts. The log repairs itself instead: when an event is lost or the server reports a
// store failure, it restarts the embedded server on the same directory (which reopens the
// store) and the in-process connection reconnects to it. Repairs back off while the fault
// lasts; the first event stored after one is logged as the recovery and counted in
// sluice_events_store_recoveries_total.

const (
	repairMinBackoff = 2 * time.Second
	repairMaxBackoff = time.Minute
)

// serverRef is the in-process connection's view of the embedded server: the connection
// reconnects through it, so it reaches the server that replaced a failed one.
type serverRef struct{ p atomic.Pointer[server.Server] }

func (r *serverRef) InProcessConn() (net.Conn, error) {
	srv := r.p.Load()
	if srv == nil {
		return nil, errors.New("events: embedded server is stopped")
	}
	return srv.InProcessConn()
}

// needRepair asks for a restart of the embedded store (no-op on an external server, after
// Close, or while a repair is already pending).
func (l *Log) needRepair(cause string) {
	if l.External() || l.closed.Load() || !l.repairing.CompareAndSwap(false, true) {
		return
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.repair(cause)
	}()
}

// repair restarts the embedded server after the backoff, and clears the pending flag.
func (l *Log) repair(cause string) {
	defer l.repairing.Store(false)
	wait := time.Duration(l.repairBackoff.Load())
	if wait == 0 {
		wait = repairMinBackoff
	}
	select {
	case <-l.ctx.Done():
		return
	case <-time.After(wait):
	}
	l.repairBackoff.Store(int64(min(2*wait, repairMaxBackoff)))
	l.log.Warn("event store failed; restarting the embedded store", "cause", cause)
	if err := l.restartEmbedded(); err != nil {
		l.log.Error("event store restart", "err", err)
		return
	}
	l.unconfirmed.Store(true) // the next stored event confirms the recovery
}

// restartEmbedded replaces the embedded server by a fresh one on the same store directory.
func (l *Log) restartEmbedded() error {
	l.srvMu.Lock()
	defer l.srvMu.Unlock()
	if l.closed.Load() {
		return nil
	}
	old := l.srv
	l.ref.p.Store(nil)
	old.Shutdown()
	old.WaitForShutdown()
	srv, err := l.newEmbedded()
	if err != nil {
		return err
	}
	l.srv = srv
	l.ref.p.Store(srv)
	if err := l.nc.ForceReconnect(); err != nil {
		return fmt.Errorf("events: reconnecting: %w", err)
	}
	ctx, cancel := context.WithTimeout(l.ctx, 10*time.Second)
	defer cancel()
	return l.ensureStreams(ctx)
}

// stored notes a stored event: the first one after a repair is the recovery.
func (l *Log) stored() {
	if !l.unconfirmed.Load() || !l.unconfirmed.CompareAndSwap(true, false) {
		return
	}
	l.repairBackoff.Store(0)
	l.recoveries.Inc()
	l.log.Info("event store recovered: events are stored again")
}

// isStoreFailure reports whether a message of the embedded server tells of a failed store.
func isStoreFailure(msg string) bool {
	return strings.Contains(msg, "failed to store") || strings.Contains(msg, "Critical write error") ||
		strings.Contains(msg, "out of resources")
}
