package api

import (
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ConnLimiter wraps the HTTP listener and caps its open connections, in all and per remote
// address, so that one client cannot take the file descriptors that media, recordings and the
// event store need. A connection over a cap is closed at once, before any byte is read. Safe
// for concurrent use; the wrapped listener is closed by Close.
type ConnLimiter struct {
	net.Listener
	max, perAddr int

	mu     sync.Mutex
	open   int
	byAddr map[string]int

	refused atomic.Uint64
}

// NewConnLimiter caps l at maxConns connections and perAddr connections from one address (0
// for no cap).
func NewConnLimiter(l net.Listener, maxConns, perAddr int) *ConnLimiter {
	return &ConnLimiter{Listener: l, max: maxConns, perAddr: perAddr, byAddr: map[string]int{}}
}

// Accept returns the next connection within the caps; those over a cap are closed and counted.
func (l *ConnLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		host := hostOf(c.RemoteAddr().String())
		if l.admit(host) {
			return &limitedConn{Conn: c, l: l, host: host}, nil
		}
		l.refused.Add(1)
		_ = c.Close()
	}
}

func (l *ConnLimiter) admit(host string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if (l.max > 0 && l.open >= l.max) || (l.perAddr > 0 && l.byAddr[host] >= l.perAddr) {
		return false
	}
	l.open++
	l.byAddr[host]++
	return true
}

func (l *ConnLimiter) release(host string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.byAddr[host]--; l.byAddr[host] <= 0 {
		delete(l.byAddr, host)
	}
}

// Collectors returns the limiter's metrics: open connections and those refused.
func (l *ConnLimiter) Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sluice_http_connections", Help: "Open HTTP connections."},
			func() float64 { l.mu.Lock(); defer l.mu.Unlock(); return float64(l.open) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sluice_http_connections_refused_total", Help: "HTTP connections closed at accept because a connection cap (http.max_conns, http.max_conns_per_ip) was reached."},
			func() float64 { return float64(l.refused.Load()) }),
	}
}

// limitedConn gives its slot back once, when closed.
type limitedConn struct {
	net.Conn
	l    *ConnLimiter
	host string
	once sync.Once
}

func (c *limitedConn) Close() error {
	c.once.Do(func() { c.l.release(c.host) })
	return c.Conn.Close()
}

// BodyTimeout wraps h so that a request body must arrive in full within d of the handler's
// start; a slower body fails its reads and the connection is closed. The deadline is lifted
// once the body is read, so long responses (event streams) are not cut. d <= 0 disables it.
func BodyTimeout(d time.Duration, h http.Handler) http.Handler {
	if d <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			rc := http.NewResponseController(w)
			if rc.SetReadDeadline(time.Now().Add(d)) == nil {
				r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
			}
		}
		h.ServeHTTP(w, r)
	})
}

// deadlineBody lifts the connection's read deadline when the body ends.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.done { //nolint:errorlint // io.EOF is returned unwrapped by contract
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}
