// Package rtmp is the RTMP/RTMPS publishing client of broadcasts: it connects to a platform's
// ingest (YouTube, Twitch, any RTMP server), publishes one stream and writes FLV-tagged media
// with write deadlines. It builds on go-rtmp for the handshake, the message type ids and
// status codes; the chunk stream, AMF0 and FLV tags come from sfu/rtmpproto, and the command
// flow is its own.
//
// Specification: Adobe RTMP 1.0 (2012); Adobe FLV v10.1 annex E for the tag bodies.
package rtmp

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/yutopp/go-rtmp/handshake"
	"github.com/yutopp/go-rtmp/message"

	"github.com/sluice-media/sluice/sfu/netguard"
	"github.com/sluice-media/sluice/sfu/rtmpproto"
)

// Defaults of Options.
const (
	DefaultTimeout      = 15 * time.Second
	DefaultWriteTimeout = 10 * time.Second
	outChunkSize        = 4096
	closeTimeout        = 2 * time.Second
	flashVer            = "FMLE/3.0 (compatible; sluice)"
)

// Chunk stream ids of what the client sends (the ones ffmpeg uses).
const (
	csControl = 2 // protocol control and user control messages
	csCommand = 3 // NetConnection commands
	csAudio   = 4
	csVideo   = 6
	csStream  = 8 // NetStream commands and data (publish, @setDataFrame)
)

// ErrRefusedByClose is the refusal of servers that answer a bad stream key by closing the
// connection (nginx-rtmp's on_publish, YouTube, Twitch): the connection closed after the
// handshake and before the publish was accepted.
var ErrRefusedByClose = errors.New("the server closed the connection before accepting the publish")

// ErrSetupTimeout is returned when the server did not complete the setup in time.
var ErrSetupTimeout = errors.New("the server did not accept the publish in time")

// ErrNoServer is the error of a publish that failed before an RTMP server answered the
// handshake: a closed port, a filtered one, a silent one and one that speaks another protocol
// (or not TLS, for rtmps) fail alike, so that broadcasts cannot be used to map a network.
// Refusals of the outbound policy and certificates that do not verify are told apart.
var ErrNoServer = errors.New("no RTMP server answered")

// ErrClosed is the error of writes on a connection that has ended.
var ErrClosed = errors.New("rtmp connection closed")

// StatusError is a refusal the server stated: an _error result, or an onStatus of level error
// (NetStream.Publish.BadName…). Description comes from the server, scrubbed of the stream key.
type StatusError struct {
	Command     string // connect, createStream or publish
	Code        string
	Description string
}

func (e *StatusError) Error() string {
	msg := e.Command + " refused"
	if e.Code != "" {
		msg += ": " + e.Code
	}
	if e.Description != "" {
		msg += " (" + e.Description + ")"
	}
	return msg
}

// Options tune a connection. The zero value uses the defaults.
type Options struct {
	// TLS is the base configuration of rtmps:// connections (nil: the system's roots). The
	// server name is set from the URL.
	TLS *tls.Config
	// Timeout bounds the setup: dial, TLS, RTMP handshake, connect, createStream, publish.
	Timeout time.Duration
	// WriteTimeout bounds each write once publishing: a platform that stops reading fails the
	// connection instead of blocking the writer.
	WriteTimeout time.Duration
	// Dial opens the TCP connection (net.Dialer.DialContext when nil).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Conn is one publishing connection. Writes (WriteVideo, WriteAudio, WriteMetadata) come from
// one goroutine at a time; a reader goroutine, started by Publish and stopped by Close,
// answers the server's pings and acknowledgements. The connection ends on the first failed
// read or write: Done is closed and Err says why. Close ends it (politely when it is still
// up) and waits for the reader; it is idempotent.
type Conn struct {
	target   Target
	opts     Options
	nc       net.Conn
	cr       *rtmpproto.Reader
	streamID uint32

	wmu      sync.Mutex
	wbuf     []byte
	outChunk int
	live     bool // setup done: writes set their own deadline (guarded by wmu)

	sent atomic.Int64
	done chan struct{}

	errMu     sync.Mutex
	err       error
	closeOnce sync.Once

	// Reader goroutine state.
	ackWindow uint64
	lastAck   uint64
}

// Publish connects to t and publishes its stream: it returns once the server answered
// NetStream.Publish.Start, or the refusal (*StatusError, ErrRefusedByClose), or the network
// error. ctx bounds the setup only.
func Publish(ctx context.Context, t Target, opts Options) (*Conn, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if opts.Dial == nil {
		d := &net.Dialer{KeepAlive: 15 * time.Second}
		opts.Dial = d.DialContext
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	nc, err := opts.Dial(ctx, "tcp", t.Addr)
	if err != nil {
		return nil, noServer(t.Addr, err)
	}
	if t.Scheme == "rtmps" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if opts.TLS != nil {
			cfg = opts.TLS.Clone()
		}
		cfg.ServerName = t.Host
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = nc.Close()
			if CertificateError(err) {
				return nil, fmt.Errorf("tls: %w", err)
			}
			return nil, noServer(t.Addr, err)
		}
		nc = tc
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	br := bufio.NewReaderSize(nc, 16<<10)
	c := &Conn{
		target:   t,
		opts:     opts,
		nc:       nc,
		cr:       rtmpproto.NewReader(br, rtmpproto.ClientLimits()),
		outChunk: 128,
		done:     make(chan struct{}),
	}
	err = handshake.HandshakeWithServer(br, c.nc, &handshake.Config{SkipHandshakeVerification: true})
	if err != nil {
		stop()
		_ = nc.Close()
		return nil, noServer(t.Addr, err)
	}
	err = c.setup()
	if !stop() || ctx.Err() != nil {
		_ = nc.Close()
		if err == nil || !isRefusal(err) {
			err = fmt.Errorf("%w: %w", ErrSetupTimeout, ctx.Err())
		}
		return nil, err
	}
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	c.wmu.Lock()
	c.live = true
	c.wmu.Unlock()
	go c.readLoop()
	return c, nil
}

func isRefusal(err error) bool {
	var se *StatusError
	return errors.As(err, &se) || errors.Is(err, ErrRefusedByClose)
}

// noServerError is a publish that failed before an RTMP server answered (ErrNoServer).
type noServerError struct {
	addr  string
	cause error
}

func (e *noServerError) Error() string { return "no RTMP server answered at " + e.addr }
func (e *noServerError) Unwrap() error { return ErrNoServer }

// Cause returns the network's or the handshake's reason, for logs.
func (e *noServerError) Cause() error { return e.cause }

// noServer hides why a connection failed before the RTMP handshake completed, keeping the
// outbound policy's refusals and a cancellation by the caller.
func noServer(addr string, err error) error {
	var dns *net.DNSError
	if errors.Is(err, netguard.ErrRefused) || errors.Is(err, context.Canceled) || errors.As(err, &dns) {
		return err
	}
	return &noServerError{addr: addr, cause: err}
}

// CertificateError reports whether a TLS handshake failed on the server's certificate, an
// answer of a TLS server that the user must fix (as opposed to no TLS server at all).
func CertificateError(err error) bool {
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	return errors.As(err, &unknownCA) || errors.As(err, &hostname) || errors.As(err, &invalid) || errors.As(err, &verify)
}

// setup runs the command exchange after the handshake (c.cr reads what follows it) up to
// NetStream.Publish.Start.
func (c *Conn) setup() error {
	var size [4]byte
	binary.BigEndian.PutUint32(size[:], outChunkSize)
	if err := c.write(csControl, rtmpproto.TypeSetChunkSize, 0, 0, nil, size[:]); err != nil {
		return err
	}
	c.wmu.Lock()
	c.outChunk = outChunkSize
	c.wmu.Unlock()

	t := c.target
	if err := c.command(csCommand, 0, "connect", 1, map[string]any{
		"app": t.App, "type": "nonprivate", "flashVer": flashVer, "swfUrl": t.TCURL, "tcUrl": t.TCURL,
	}); err != nil {
		return err
	}
	if _, err := c.await("connect", 1); err != nil {
		return err
	}
	// What OBS sends before createStream; servers that do not know these ignore them.
	if err := c.command(csCommand, 0, "releaseStream", 2, nil, t.Stream); err != nil {
		return err
	}
	if err := c.command(csCommand, 0, "FCPublish", 3, nil, t.Stream); err != nil {
		return err
	}
	if err := c.command(csCommand, 0, "createStream", 4, nil); err != nil {
		return err
	}
	res, err := c.await("createStream", 4)
	if err != nil {
		return err
	}
	id, ok := firstNumber(res.Args)
	if !ok || id < 1 || id > 1<<24 {
		return &StatusError{Command: "createStream", Description: "the result carries no stream id"}
	}
	c.streamID = uint32(id)
	if err := c.command(csStream, c.streamID, "publish", 5, nil, t.Stream, "live"); err != nil {
		return err
	}
	_, err = c.await("publish", 5)
	return err
}

func str(m map[string]any, key string) string {
	s, _ := m[key].(string)
	return s
}

func firstNumber(values []any) (float64, bool) {
	for _, v := range values {
		if n, ok := v.(float64); ok {
			return n, true
		}
	}
	return 0, false
}

// await reads until the answer to a command: _result/_error of transaction tx, or for
// publish the onStatus that starts or refuses it.
func (c *Conn) await(stage string, tx float64) (rtmpproto.Command, error) {
	for {
		m, err := c.cr.Next()
		if err != nil {
			return rtmpproto.Command{}, c.setupReadError(stage, err)
		}
		cmd, isCmd, err := c.handle(m)
		if err != nil {
			return rtmpproto.Command{}, err
		}
		if !isCmd {
			continue
		}
		info := cmd.Info()
		code, level, desc := str(info, "code"), str(info, "level"), c.target.Scrub(str(info, "description"))
		switch {
		case cmd.Name == "_result" && cmd.Tx == tx && stage != "publish":
			return cmd, nil
		case cmd.Name == "_error" && cmd.Tx == tx:
			return cmd, &StatusError{Command: stage, Code: code, Description: desc}
		case stage == "publish" && (cmd.Name == "onStatus" || cmd.Name == "onFCPublish"):
			if code == string(message.NetStreamOnStatusCodePublishStart) && cmd.Name == "onStatus" {
				return cmd, nil
			}
			if level == "error" {
				return cmd, &StatusError{Command: stage, Code: code, Description: desc}
			}
		}
	}
}

// setupReadError classifies a read error during the setup.
func (c *Conn) setupReadError(stage string, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("%s: %w", stage, ErrSetupTimeout)
	}
	if closedByPeer(err) {
		return fmt.Errorf("%s: %w (%w)", stage, ErrRefusedByClose, err)
	}
	return fmt.Errorf("%s: %w", stage, err)
}

func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED)
}

// handle applies a protocol control message, answers a ping, and returns a command message
// decoded. It runs on the setup's goroutine, then on the reader's.
func (c *Conn) handle(m rtmpproto.Message) (rtmpproto.Command, bool, error) {
	if c.ackWindow > 0 && c.cr.BytesRead()-c.lastAck >= c.ackWindow {
		c.lastAck = c.cr.BytesRead()
		var seq [4]byte
		binary.BigEndian.PutUint32(seq[:], uint32(c.cr.BytesRead()))
		if err := c.write(csControl, rtmpproto.TypeAck, 0, 0, nil, seq[:]); err != nil {
			return rtmpproto.Command{}, false, err
		}
	}
	switch m.Type {
	case rtmpproto.TypeSetChunkSize:
		return rtmpproto.Command{}, false, c.cr.SetChunkSize(m.Payload)
	case rtmpproto.TypeWindowAckSize:
		if len(m.Payload) >= 4 {
			c.ackWindow = uint64(binary.BigEndian.Uint32(m.Payload))
		}
	case rtmpproto.TypeUserControl:
		// Ping request (event 6): answer with a ping response (event 7) and the same time.
		if len(m.Payload) >= 6 && binary.BigEndian.Uint16(m.Payload) == 6 {
			var resp [6]byte
			binary.BigEndian.PutUint16(resp[:], 7)
			copy(resp[2:], m.Payload[2:6])
			if err := c.write(csControl, rtmpproto.TypeUserControl, 0, 0, nil, resp[:]); err != nil {
				return rtmpproto.Command{}, false, err
			}
		}
	case rtmpproto.TypeCommandAMF0:
		cmd, err := rtmpproto.ParseCommand(m.Payload)
		if err != nil {
			return rtmpproto.Command{}, false, err
		}
		return cmd, true, nil
	}
	return rtmpproto.Command{}, false, nil
}

// readLoop reads the server's messages while publishing, until the connection ends.
func (c *Conn) readLoop() {
	defer close(c.done)
	for {
		m, err := c.cr.Next()
		if err != nil {
			if closedByPeer(err) {
				err = fmt.Errorf("%w by the server (%w)", ErrClosed, err)
			}
			c.fail(err)
			return
		}
		cmd, isCmd, err := c.handle(m)
		if err != nil {
			c.fail(err)
			return
		}
		if isCmd && cmd.Name == "onStatus" && str(cmd.Info(), "level") == "error" {
			info := cmd.Info()
			c.fail(&StatusError{Command: "publish", Code: str(info, "code"), Description: c.target.Scrub(str(info, "description"))})
			return
		}
	}
}

// fail records the first cause of the end and closes the socket.
func (c *Conn) fail(err error) {
	c.errMu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.errMu.Unlock()
	_ = c.nc.Close()
}

// Err returns why the connection ended: nil while it is up, ErrClosed after a plain Close.
func (c *Conn) Err() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.err
}

// Done is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// BytesSent returns the bytes written since the publish started, headers included.
func (c *Conn) BytesSent() int64 { return c.sent.Load() }

// Target returns where the connection publishes.
func (c *Conn) Target() Target { return c.target }

// command sends an AMF0 command.
func (c *Conn) command(csid byte, streamID uint32, name string, tx float64, args ...any) error {
	body, err := rtmpproto.EncodeAMF0(append([]any{name, tx}, args...)...)
	if err != nil {
		return err
	}
	return c.write(csid, rtmpproto.TypeCommandAMF0, streamID, 0, nil, body)
}

// write sends one message. Once publishing, each write has WriteTimeout to complete; a failed
// write ends the connection.
func (c *Conn) write(csid, typ byte, streamID, ts uint32, head, body []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.Err(); err != nil {
		return err
	}
	c.wbuf = rtmpproto.AppendMessageParts(c.wbuf[:0], csid, typ, streamID, ts, head, body, c.outChunk)
	if c.live {
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.opts.WriteTimeout))
	}
	n, err := c.nc.Write(c.wbuf)
	c.sent.Add(int64(n))
	if cap(c.wbuf) > 4<<20 {
		c.wbuf = nil // a rare huge keyframe: do not keep its buffer
	}
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("the server stopped reading for %s", c.opts.WriteTimeout)
		}
		err = fmt.Errorf("write: %w", err)
		c.fail(err)
		return err
	}
	return nil
}

// WriteVideo sends a video message at ts milliseconds: an FLV VIDEODATA body (see AVC*), given
// as head then data (either may be nil), which are sent without being joined first.
func (c *Conn) WriteVideo(ts uint32, head, data []byte) error {
	return c.write(csVideo, rtmpproto.TypeVideo, c.streamID, ts, head, data)
}

// WriteAudio sends an audio message at ts milliseconds: an FLV AUDIODATA body (see AAC*), given
// as head then data like WriteVideo's.
func (c *Conn) WriteAudio(ts uint32, head, data []byte) error {
	return c.write(csAudio, rtmpproto.TypeAudio, c.streamID, ts, head, data)
}

// WriteMetadata sends @setDataFrame onMetaData with the given properties.
func (c *Conn) WriteMetadata(props map[string]any) error {
	body, err := rtmpproto.EncodeAMF0("@setDataFrame", "onMetaData", props)
	if err != nil {
		return err
	}
	return c.write(csStream, rtmpproto.TypeDataAMF0, c.streamID, 0, nil, body)
}

// Close ends the connection: while it is up, it unpublishes first (FCUnpublish, deleteStream,
// within 2 s); then it closes the socket and waits for the reader. Idempotent.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		if c.Err() == nil {
			c.wmu.Lock()
			c.opts.WriteTimeout = min(c.opts.WriteTimeout, closeTimeout)
			c.wmu.Unlock()
			if c.command(csStream, c.streamID, "FCUnpublish", 6, nil, c.target.Stream) == nil {
				_ = c.command(csCommand, 0, "deleteStream", 7, nil, float64(c.streamID))
			}
		}
		c.fail(ErrClosed)
		<-c.done
	})
	return nil
}
