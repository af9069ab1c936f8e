package srt

import (
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/sfu"
)

// session is one SRT connection, publish or play. The goroutine that serves the connection
// owns it; other goroutines end it only through kill, which records why and closes the
// connection, so that the serving goroutine's read fails and it tears the session down.
type session struct {
	lastMedia atomic.Int64 // unix ns of the last bytes read

	mu    sync.Mutex
	conn  gosrt.Conn
	cause *endCause
}

// endCause says why a session must end; the first one set wins.
type endCause struct {
	reason string
	err    error
}

// kill ends the session for reason, from any goroutine.
func (sess *session) kill(reason string, err error) {
	sess.mu.Lock()
	if sess.cause == nil {
		sess.cause = &endCause{reason, err}
	}
	c := sess.conn
	sess.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

// setConn attaches the accepted connection (closing it at once if the session was killed).
func (sess *session) setConn(c gosrt.Conn) {
	sess.mu.Lock()
	sess.conn = c
	killed := sess.cause != nil
	sess.mu.Unlock()
	if killed {
		_ = c.Close()
	}
}

// endCause decides why the session ended: a recorded cause (kill), else the read error.
func (sess *session) endCause(readErr error) (string, error) {
	sess.mu.Lock()
	cause := sess.cause
	sess.mu.Unlock()
	switch {
	case cause != nil:
		return cause.reason, cause.err
	case readErr == nil, errors.Is(readErr, io.EOF):
		return sfu.ReasonClientDisconnected, nil // the peer closed (SRT shutdown) or went idle
	}
	return sfu.ReasonError, readErr
}

// reader is the connection as the MPEG-TS reader reads it: every read marks the session live.
type reader struct {
	sess  *session
	conn  gosrt.Conn
	clock func() time.Time
}

func (r *reader) Read(p []byte) (int, error) {
	n, err := r.conn.Read(p)
	if n > 0 {
		r.sess.lastMedia.Store(r.clock().UnixNano())
	}
	return n, err
}

// watch ends the session when its participant p is removed from the room (kick, takeover, room
// deleted) or when the connection sends nothing for timeout. It returns when quit closes.
func (sess *session) watch(p *sfu.Participant, quit <-chan struct{}, timeout time.Duration, clock func() time.Time, log *slog.Logger) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case <-quit:
			return
		case <-p.Done():
			sess.kill(p.LeaveReason(), nil)
			return
		case <-timer.C:
			idle := clock().Sub(time.Unix(0, sess.lastMedia.Load()))
			if idle < timeout {
				timer.Reset(timeout - idle)
				continue
			}
			log.Warn("srt connection sent no media", "for", timeout)
			sess.kill(sfu.ReasonNoMediaTimeout, nil)
			return
		}
	}
}

// publish admits a publisher, accepts its connection and turns its MPEG-TS into the
// participant's tracks until the connection ends.
func (s *Server) publish(req gosrt.ConnRequest, sess *session, g ingest.Grant, log *slog.Logger) {
	remote := req.RemoteAddr().String()
	pub, err := s.pubs.Admit(g, remote, sfu.ProtocolSRT, func(reason string) { sess.kill(reason, nil) })
	if err != nil {
		code := gosrt.REJX_ISE
		switch {
		case errors.Is(err, ingest.ErrKeyInUse), errors.Is(err, ingest.ErrIdentityInUse):
			code = gosrt.REJX_CONFLICT
		case errors.Is(err, ingest.ErrShutdown):
			code = gosrt.REJX_DOWN
		}
		log.Info("srt publish refused", "reason", err.Error())
		req.Reject(code)
		return
	}
	log = log.With("room", g.Room, "participant", pub.P.Identity())
	conn, err := req.Accept()
	if err != nil {
		s.finish(pub, nil, log, sfu.ReasonError, err)
		return
	}
	sess.setConn(conn)
	if g.Ingest != nil {
		log = log.With("ingest", g.Ingest.ID)
	}
	log.Info("srt publish started")
	clock := s.hub.Now
	sess.lastMedia.Store(clock().UnixNano())
	quit := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		sess.watch(pub.P, quit, s.cfg.ReadTimeout, clock, log)
	}()
	pb := newPublisher(s, pub, conn, log)
	readErr := pb.run(&reader{sess: sess, conn: conn, clock: clock})
	_ = conn.Close()
	close(quit)
	<-watched
	reason, cause := sess.endCause(readErr)
	s.finish(pub, pb, log, reason, cause)
}

// finish ends a publish session: the participant leaves with reason (stream.failed when err
// is set), the key is released, and the ingest, if this session still held its key, becomes
// disconnected.
func (s *Server) finish(pub *ingest.Publisher, pb *publisher, log *slog.Logger, reason string, err error) {
	s.pubs.Release(pub, reason, err)
	attrs := []any{"reason", reason}
	if err != nil {
		attrs = append(attrs, "err", err.Error())
	}
	if pb != nil {
		attrs = append(attrs, pb.summary()...)
	}
	if err != nil {
		log.Warn("srt publish ended", attrs...)
	} else {
		log.Info("srt publish ended", attrs...)
	}
}
