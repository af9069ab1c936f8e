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

// session is one admitted SRT connection: its participant and the key it holds. The goroutine
// that serves the connection owns it; other goroutines end it only through kill, which
// records why and closes the connection, so that the serving goroutine's read fails and it
// tears the session down.
type session struct {
	lock     string
	ingestID string
	p        *sfu.Participant
	done     chan struct{} // closed once the session is released

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

// watch ends the session when its participant is removed from the room (kick, takeover, room
// deleted) or when the connection sends nothing for timeout. It returns when quit closes.
func (sess *session) watch(quit <-chan struct{}, timeout time.Duration, clock func() time.Time, log *slog.Logger) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case <-quit:
			return
		case <-sess.p.Done():
			sess.kill(sess.p.LeaveReason(), nil)
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
func (s *Server) publish(req gosrt.ConnRequest, t target, log *slog.Logger) {
	remote := req.RemoteAddr().String()
	sess, rej := s.admit(t, remote)
	if rej != nil {
		log.Info("srt publish refused", "reason", rej.err.Error())
		req.Reject(rej.code)
		return
	}
	log = log.With("room", t.room, "participant", sess.p.Identity())
	conn, err := req.Accept()
	if err != nil {
		s.finish(sess, nil, log, sfu.ReasonError, err)
		return
	}
	sess.setConn(conn)
	if t.ingestID != "" && s.ingests != nil {
		s.ingests.SetState(t.ingestID, ingest.StateConnected, 0, "", nil)
		log = log.With("ingest", t.ingestID)
	}
	log.Info("srt publish started")
	clock := s.hub.Now
	sess.lastMedia.Store(clock().UnixNano())
	quit := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		sess.watch(quit, s.cfg.ReadTimeout, clock, log)
	}()
	pub := newPublisher(s, sess, conn, log)
	readErr := pub.run(&reader{sess: sess, conn: conn, clock: clock})
	_ = conn.Close()
	close(quit)
	<-watched
	reason, cause := sess.endCause(readErr)
	s.finish(sess, pub, log, reason, cause)
}

// finish ends a publish session: the participant leaves with reason (stream.failed when err
// is set), the key is released, and the ingest, if this session still held its key, becomes
// disconnected.
func (s *Server) finish(sess *session, pub *publisher, log *slog.Logger, reason string, err error) {
	sess.p.Close(reason, err)
	owner := s.release(sess)
	if owner && sess.ingestID != "" && s.ingests != nil {
		s.ingests.SetState(sess.ingestID, ingest.StateDisconnected, 0, reason, err)
	}
	attrs := []any{"reason", reason}
	if err != nil {
		attrs = append(attrs, "err", err.Error())
	}
	if pub != nil {
		attrs = append(attrs, pub.summary()...)
	}
	if err != nil {
		log.Warn("srt publish ended", attrs...)
	} else {
		log.Info("srt publish ended", attrs...)
	}
	close(sess.done)
}
