package rtmp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gortmp "github.com/yutopp/go-rtmp"
	"github.com/yutopp/go-rtmp/message"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/rtmpproto"
)

// errConnectionLost is the error of a session whose connection ended without unpublishing
// (publisher killed, network lost).
var errConnectionLost = errors.New("the connection closed before the publisher unpublished")

// endCause says why a session must end; the first one set wins.
type endCause struct {
	reason string
	err    error
}

// conn is one accepted connection. go-rtmp runs it on its own goroutine (the connection
// goroutine): it reads through the guard, and calls the gortmp.Handler methods below, which
// therefore run serially; the media path runs there too, as the single producer of the
// session's tracks. Other goroutines end a connection only through kill, which records why
// and closes the socket; the connection goroutine then tears the session down in OnClose, the
// one path that releases it. Close (go-rtmp's last call) stops the watchdog and releases the
// connection's slot.
type conn struct {
	net.Conn
	s        *Server
	protocol string // rtmp or rtmps
	remote   string
	guard    *rtmpproto.Guard
	lib      *libLog
	log      *slog.Logger

	broken    atomic.Bool  // a write failed: the socket is closed and later writes dropped
	lastMedia atomic.Int64 // unix ns of the last media message (or of accept / admission)
	published atomic.Bool
	bytesIn   atomic.Int64 // bytes read from the client (stream.stats)
	ending    atomic.Bool  // the connection goroutine is ending the session itself
	joined    chan *sfu.Participant
	quit      chan struct{}
	watchDone chan struct{}
	closeOnce sync.Once

	mu    sync.Mutex
	cause *endCause

	// Owned by the connection goroutine.
	rc         *gortmp.Conn
	sess       *session
	pub        *publisher
	handlerErr error
	namePrefix string // from the app, for ffmpeg's URL split
}

func newConn(s *Server, raw net.Conn, protocol string) *conn {
	remote := raw.RemoteAddr().String()
	log := s.log.With("remote_addr", remote, "protocol", protocol)
	c := &conn{
		Conn:      raw,
		s:         s,
		protocol:  protocol,
		remote:    remote,
		guard:     rtmpproto.NewGuard(raw, s.lim),
		lib:       &libLog{log: log},
		log:       log,
		joined:    make(chan *sfu.Participant, 1),
		quit:      make(chan struct{}),
		watchDone: make(chan struct{}),
	}
	c.lastMedia.Store(s.clock().UnixNano())
	return c
}

// Read implements io.Reader for go-rtmp: every byte passes the guard.
func (c *conn) Read(p []byte) (n int, err error) {
	defer c.catch(&err)
	n, err = c.guard.Read(p)
	c.bytesIn.Add(int64(n))
	return n, err
}

// Write implements io.Writer for go-rtmp, with a deadline. A failed write closes the socket
// (the reader then ends the session) and is reported as done, so that go-rtmp's writer
// goroutine never waits on a peer that stopped reading.
func (c *conn) Write(p []byte) (int, error) {
	if c.broken.Load() {
		return len(p), nil
	}
	_ = c.SetWriteDeadline(time.Now().Add(c.s.cfg.ReadTimeout))
	if _, err := c.Conn.Write(p); err != nil {
		if !c.broken.Swap(true) {
			c.kill(sfu.ReasonClientDisconnected, fmt.Errorf("%w: write: %w", errConnectionLost, err))
		}
	}
	return len(p), nil
}

// Close implements io.Closer; go-rtmp calls it last, after OnClose.
func (c *conn) Close() error {
	c.closeOnce.Do(func() {
		_ = c.Conn.Close()
		close(c.quit)
		<-c.watchDone
		if c.rc != nil {
			<-c.rc.GetChunkStreamer().Done() // go-rtmp's writer goroutine
		}
		c.s.released(c)
	})
	return nil
}

// kill ends the connection for reason (from any goroutine): the first cause is kept, and the
// socket is closed so that the connection goroutine stops reading and tears down.
func (c *conn) kill(reason string, err error) {
	c.mu.Lock()
	if c.cause == nil {
		c.cause = &endCause{reason, err}
	}
	c.mu.Unlock()
	_ = c.Conn.Close()
}

// watch is the connection's watchdog: it ends a connection that does not publish, or whose
// session sends no media, within read_timeout, and one whose participant was removed from
// its room. It returns when Close stops it.
func (c *conn) watch() {
	defer close(c.watchDone)
	timeout := c.s.cfg.ReadTimeout
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var left <-chan struct{}
	var p *sfu.Participant
	for {
		select {
		case <-c.quit:
			return
		case p = <-c.joined:
			left = p.Done()
		case <-left:
			left = nil
			if !c.ending.Load() { // removed from the room (kick, takeover, room deleted)
				c.kill(p.LeaveReason(), nil)
			}
		case <-timer.C:
			idle := c.s.clock().Sub(time.Unix(0, c.lastMedia.Load()))
			if idle < timeout {
				timer.Reset(timeout - idle)
				continue
			}
			if c.published.Load() {
				c.log.Warn("rtmp publisher sent no media", "for", timeout)
				c.kill(sfu.ReasonNoMediaTimeout, nil)
			} else {
				c.log.Info("rtmp connection did not publish in time", "timeout", timeout)
				c.kill(sfu.ReasonError, errors.New("no publish within read_timeout"))
			}
		}
	}
}

// catch turns a panic in our code into an error that ends the connection (go-rtmp would
// recover it too, silently): it is a bug, logged with its stack and counted.
func (c *conn) catch(err *error) {
	if r := recover(); r != nil {
		c.s.panics.Add(1)
		c.log.Error("BUG: panic in the rtmp session", "panic", r, "stack", string(debug.Stack()))
		e := fmt.Errorf("internal error: %v", r)
		c.handlerErr = e
		*err = e
	}
}

// OnServe implements gortmp.Handler; the handshake is done. The chunk size of what the
// server sends is raised so that each reply travels in one chunk (and replies stay in the
// order they were queued). go-rtmp's writer goroutine has not read its state yet: this write
// happens before its first read, through the hand-off of the first queued message.
func (c *conn) OnServe(rc *gortmp.Conn) {
	c.rc = rc
	if err := rc.GetChunkStreamer().SelfState().SetChunkSize(outChunkSize); err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = rc.Write(ctx, 2, 0, &gortmp.ChunkMessage{Message: &message.SetChunkSize{ChunkSize: outChunkSize}})
}

// OnConnect implements gortmp.Handler: only the app "live" is served. ffmpeg splits
// rtmp://HOST/live/room/identity into the app "live/room" and the stream "identity": the part
// of the app after "live/" is put back in front of the stream name.
func (c *conn) OnConnect(_ uint32, cmd *message.NetConnectionConnect) (err error) {
	defer c.catch(&err)
	app := strings.TrimSuffix(strings.SplitN(cmd.Command.App, "?", 2)[0], "/")
	c.lib.redact(app)
	if rest, ok := strings.CutPrefix(app, "live/"); ok && rest != "" {
		app, c.namePrefix = "live", rest+"/"
	}
	if app != "live" {
		shown := app // an app with a stream key in it must not reach the log
		if strings.Contains(app, "/") || len(app) > 32 {
			shown = "(hidden)"
		}
		c.log.Info("rtmp connect refused: unknown app (publish to rtmp://HOST:PORT/live)", "app", shown)
		return fmt.Errorf("unknown app %q", app)
	}
	return nil
}

// outChunkSize is the chunk size of what the server sends.
const outChunkSize = 4096

// OnCreateStream implements gortmp.Handler.
func (c *conn) OnCreateStream(uint32, *message.NetConnectionCreateStream) error { return nil }

// OnReleaseStream implements gortmp.Handler. OBS names the stream key here first.
func (c *conn) OnReleaseStream(_ uint32, cmd *message.NetConnectionReleaseStream) error {
	c.lib.redact(cmd.StreamName)
	return nil
}

// OnFCPublish implements gortmp.Handler.
func (c *conn) OnFCPublish(_ uint32, cmd *message.NetStreamFCPublish) error {
	c.lib.redact(cmd.StreamName)
	return nil
}

// OnFCUnpublish implements gortmp.Handler: the publisher stops cleanly.
func (c *conn) OnFCUnpublish(uint32, *message.NetStreamFCUnpublish) error {
	c.finish(sfu.ReasonClientDisconnected, nil)
	return nil
}

// OnDeleteStream implements gortmp.Handler: the publisher stops cleanly.
func (c *conn) OnDeleteStream(uint32, *message.NetStreamDeleteStream) error {
	c.finish(sfu.ReasonClientDisconnected, nil)
	return nil
}

// OnPublish implements gortmp.Handler: it resolves the stream key and admits the session, or
// answers NetStream.Publish.BadName (go-rtmp then adds NetStream.Publish.Failed) and ends the
// connection.
func (c *conn) OnPublish(sctx *gortmp.StreamContext, _ uint32, cmd *message.NetStreamPublish) (err error) {
	defer c.catch(&err)
	name := c.namePrefix + cmd.PublishingName
	c.lib.redact(cmd.PublishingName)
	c.lib.redact(name)
	if c.sess != nil {
		return c.refuse(sctx, badName("This connection already published.", errPublished))
	}
	t, ref := c.s.resolve(name, c)
	if ref != nil {
		return c.refuse(sctx, ref)
	}
	sess, ref := c.s.admit(c, t)
	if ref != nil {
		return c.refuse(sctx, ref)
	}
	c.sess = sess
	c.pub = newPublisher(c, sess.P)
	c.log = c.log.With("room", t.Room, "participant", sess.P.Identity())
	c.lastMedia.Store(c.s.clock().UnixNano())
	c.published.Store(true)
	c.joined <- sess.P
	attrs := []any{}
	if id := sess.ingestID(); id != "" {
		attrs = append(attrs, "ingest", id)
	}
	c.log.Info("rtmp publish started", attrs...)
	return nil
}

// refuse answers the publish with the refusal's status and returns the error that makes
// go-rtmp end the connection.
func (c *conn) refuse(sctx *gortmp.StreamContext, r *refusal) error {
	c.log.Info("rtmp publish refused", "reason", r.err.Error())
	if r.code == message.NetStreamOnStatusCodePublishBadName {
		body := new(bytes.Buffer)
		status := &message.NetStreamOnStatus{InfoObject: message.NetStreamOnStatusInfoObject{
			Level: message.NetStreamOnStatusLevelError, Code: r.code, Description: r.desc,
		}}
		if err := message.EncodeBodyAnyValues(message.NewAMFEncoder(body, message.EncodingTypeAMF0), status); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = c.rc.Write(ctx, 5, 0, &gortmp.ChunkMessage{StreamID: sctx.StreamID, Message: &message.CommandMessage{
				CommandName: "onStatus", Encoding: message.EncodingTypeAMF0, Body: body,
			}})
			cancel()
		}
	}
	return r
}

// OnPlay implements gortmp.Handler: playing over RTMP is not served (use WHEP or RTSP).
func (c *conn) OnPlay(*gortmp.StreamContext, uint32, *message.NetStreamPlay) error {
	c.log.Info("rtmp play refused: this server takes publishers only")
	return errors.New("play is not supported")
}

// OnSetDataFrame implements gortmp.Handler: @setDataFrame onMetaData.
func (c *conn) OnSetDataFrame(_ uint32, data *message.NetStreamSetDataFrame) (err error) {
	defer c.catch(&err)
	if md, ok := rtmpproto.ParseMetadata(data.Payload); ok && c.pub != nil {
		c.pub.setMetadata(md)
	}
	return nil
}

// OnAudio implements gortmp.Handler. The payload reader is recycled by go-rtmp when this
// returns: the publisher copies what it keeps.
func (c *conn) OnAudio(ts uint32, payload io.Reader) (err error) {
	defer c.catch(&err)
	if c.pub == nil || c.sess.ended {
		return nil
	}
	c.lastMedia.Store(c.s.clock().UnixNano())
	if err := c.pub.onAudio(ts, payload); err != nil {
		c.handlerErr = err
		return err
	}
	return nil
}

// OnVideo implements gortmp.Handler; see OnAudio.
func (c *conn) OnVideo(ts uint32, payload io.Reader) (err error) {
	defer c.catch(&err)
	if c.pub == nil || c.sess.ended {
		return nil
	}
	c.lastMedia.Store(c.s.clock().UnixNano())
	if err := c.pub.onVideo(ts, payload); err != nil {
		c.handlerErr = err
		return err
	}
	return nil
}

// OnUnknownMessage implements gortmp.Handler.
func (c *conn) OnUnknownMessage(uint32, message.Message) error { return nil }

// OnUnknownCommandMessage implements gortmp.Handler.
func (c *conn) OnUnknownCommandMessage(uint32, *message.CommandMessage) error { return nil }

// OnUnknownDataMessage implements gortmp.Handler: onMetaData sent without @setDataFrame.
func (c *conn) OnUnknownDataMessage(_ uint32, data *message.DataMessage) (err error) {
	defer c.catch(&err)
	if data.Name != "onMetaData" || c.pub == nil {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(data.Body, int64(c.s.lim.MaxAMF)))
	if err != nil {
		return nil
	}
	if md, ok := rtmpproto.ParseMetadataBody(body); ok {
		c.pub.setMetadata(md)
	}
	return nil
}

// OnClose implements gortmp.Handler: the connection goroutine is done reading; the session
// ends with the first recorded cause.
func (c *conn) OnClose() {
	reason, err := c.endCause()
	c.finish(reason, err)
	if c.sess == nil {
		if v := c.guard.Violation(); v != nil {
			c.log.Warn("rtmp connection closed", "err", v)
		} else {
			c.log.Debug("rtmp connection closed", "reason", reason)
		}
	}
}

// endCause decides why the session ended: a recorded cause (kill), a protocol violation, a
// media error, an error go-rtmp ended the session on, or the connection itself.
func (c *conn) endCause() (string, error) {
	c.mu.Lock()
	cause := c.cause
	c.mu.Unlock()
	switch {
	case cause != nil:
		return cause.reason, cause.err
	case c.guard.Violation() != nil:
		return sfu.ReasonError, c.guard.Violation()
	case c.handlerErr != nil:
		return sfu.ReasonError, c.handlerErr
	}
	if src := c.guard.SourceErr(); src != nil {
		if errors.Is(src, io.EOF) {
			return sfu.ReasonClientDisconnected, errConnectionLost
		}
		return sfu.ReasonClientDisconnected, fmt.Errorf("%w: %w", errConnectionLost, src)
	}
	if msg := c.lib.LastError(); msg != "" {
		return sfu.ReasonError, fmt.Errorf("rtmp: %s", msg)
	}
	return sfu.ReasonClientDisconnected, errConnectionLost
}

// finish ends the session (idempotent): the participant leaves with reason (its tracks and
// stream end: stream.failed when err is set), the key is released, and the ingest, if this
// session still held its key, becomes disconnected.
func (c *conn) finish(reason string, err error) {
	sess := c.sess
	if sess == nil || sess.ended {
		return
	}
	sess.ended = true
	c.ending.Store(true)
	c.s.pubs.Release(sess.Publisher, reason, err)
	attrs := []any{"reason", reason}
	if err != nil {
		attrs = append(attrs, "err", err.Error())
	}
	if c.pub != nil {
		attrs = append(attrs, c.pub.summary()...)
	}
	if err != nil && reason == sfu.ReasonError {
		c.log.Warn("rtmp publish ended", attrs...)
	} else {
		c.log.Info("rtmp publish ended", attrs...)
	}
}
