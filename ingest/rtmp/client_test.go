package rtmp

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gortmp "github.com/yutopp/go-rtmp"
	"github.com/yutopp/go-rtmp/handshake"
	"github.com/yutopp/go-rtmp/message"

	"github.com/sluice-media/sluice/sfu/rtmpproto/rtmptest"
)

// rtmpClient is a publisher built on go-rtmp's chunk streamer and handshake: it does what OBS
// does (connect, createStream, publish, media on chunk streams 4 and 6) and reads the
// server's answers, which go-rtmp's own ClientConn cannot (it panics on onStatus).
type rtmpClient struct {
	t        testing.TB
	once     sync.Once
	conn     net.Conn
	cs       *gortmp.ChunkStreamer
	streamID uint32
}

func dialClient(t testing.TB, addr string, tlsCfg *tls.Config) *rtmpClient {
	t.Helper()
	c, err := tryDial(addr, tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	c.t = t
	t.Cleanup(c.close)
	return c
}

func tryDial(addr string, tlsCfg *tls.Config) (*rtmpClient, error) {
	var conn net.Conn
	var err error
	d := &net.Dialer{Timeout: 5 * time.Second}
	if tlsCfg != nil {
		conn, err = tls.DialWithDialer(d, "tcp", addr, tlsCfg)
	} else {
		conn, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := handshake.HandshakeWithServer(conn, conn, &handshake.Config{SkipHandshakeVerification: true}); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("handshake: %w", err)
	}
	_ = conn.SetDeadline(time.Time{})
	cs := gortmp.NewChunkStreamer(conn, conn, nil)
	// Before anything is queued, so go-rtmp's writer goroutine reads it after this write.
	if err := cs.SelfState().SetChunkSize(4096); err != nil {
		_ = conn.Close()
		return nil, err
	}
	c := &rtmpClient{conn: conn, cs: cs}
	if err := c.write(2, 0, 0, &message.SetChunkSize{ChunkSize: 4096}); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

func (c *rtmpClient) close() {
	c.once.Do(func() {
		_ = c.conn.Close()
		_ = c.cs.Close()
	})
}

func (c *rtmpClient) write(csid int, streamID, ts uint32, msg message.Message) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.cs.Write(ctx, csid, ts, &gortmp.ChunkMessage{StreamID: streamID, Message: msg})
}

func (c *rtmpClient) command(csid int, streamID uint32, name string, tx int64, args ...any) error {
	body := new(bytes.Buffer)
	enc := message.NewAMFEncoder(body, message.EncodingTypeAMF0)
	for _, a := range args {
		if err := enc.Encode(a); err != nil {
			return err
		}
	}
	return c.write(csid, streamID, 0, &message.CommandMessage{CommandName: name, TransactionID: tx, Encoding: message.EncodingTypeAMF0, Body: body})
}

// readCommand returns the next command the server sends with its AMF0 values.
func (c *rtmpClient) readCommand() (string, []any, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer func() { _ = c.conn.SetReadDeadline(time.Time{}) }()
	for {
		var cm gortmp.ChunkMessage
		if _, _, err := c.cs.Read(&cm); err != nil {
			return "", nil, err
		}
		if m, ok := cm.Message.(*message.SetChunkSize); ok {
			if err := c.cs.PeerState().SetChunkSize(m.ChunkSize); err != nil {
				return "", nil, err
			}
			continue
		}
		cmd, ok := cm.Message.(*message.CommandMessage)
		if !ok {
			continue
		}
		dec := message.NewAMFDecoder(cmd.Body, cmd.Encoding)
		var values []any
		for {
			var v any
			if err := dec.Decode(&v); err != nil {
				break
			}
			values = append(values, v)
		}
		return cmd.CommandName, values, nil
	}
}

// connect sends connect(app) and returns the server's answer (_result or _error).
func (c *rtmpClient) connect(app string) (string, error) {
	obj := map[string]any{"app": app, "type": "nonprivate", "flashVer": "FMLE/3.0", "tcUrl": "rtmp://127.0.0.1/" + app}
	if err := c.command(3, 0, "connect", 1, obj); err != nil {
		return "", err
	}
	for {
		name, _, err := c.readCommand()
		if err != nil || name == "_result" || name == "_error" {
			return name, err
		}
	}
}

// publish does createStream and publish(name) and returns the onStatus code.
func (c *rtmpClient) publish(name string) (string, error) {
	if err := c.command(3, 0, "releaseStream", 2, nil, name); err != nil {
		return "", err
	}
	if err := c.command(3, 0, "FCPublish", 3, nil, name); err != nil {
		return "", err
	}
	if err := c.command(3, 0, "createStream", 4, nil); err != nil {
		return "", err
	}
	for c.streamID == 0 {
		cmd, values, err := c.readCommand()
		if err != nil {
			return "", err
		}
		if cmd == "_result" && len(values) >= 2 {
			if id, ok := values[1].(float64); ok {
				c.streamID = uint32(id)
			}
		}
	}
	if err := c.command(4, c.streamID, "publish", 0, nil, name, "live"); err != nil {
		return "", err
	}
	for {
		cmd, values, err := c.readCommand()
		if err != nil {
			return "", err
		}
		if cmd != "onStatus" || len(values) < 2 {
			continue
		}
		info, _ := values[1].(map[string]any)
		code, _ := info["code"].(string)
		return code, nil
	}
}

// mustPublish connects and publishes, failing the test unless the server accepts.
func (c *rtmpClient) mustPublish(name string) {
	c.t.Helper()
	if answer, err := c.connect("live"); err != nil || answer != "_result" {
		c.t.Fatalf("connect: %s %v", answer, err)
	}
	if code, err := c.publish(name); err != nil || code != "NetStream.Publish.Start" {
		c.t.Fatalf("publish: %q %v", code, err)
	}
}

func (c *rtmpClient) video(ts uint32, tag []byte) error {
	return c.write(6, c.streamID, ts, &message.VideoMessage{Payload: bytes.NewReader(tag)})
}

func (c *rtmpClient) audio(ts uint32, tag []byte) error {
	return c.write(5, c.streamID, ts, &message.AudioMessage{Payload: bytes.NewReader(tag)})
}

func (c *rtmpClient) metadata(width, height int) error {
	body := new(bytes.Buffer)
	enc := message.NewAMFEncoder(body, message.EncodingTypeAMF0)
	_ = enc.Encode("onMetaData")
	_ = enc.Encode(map[string]any{"width": float64(width), "height": float64(height), "videocodecid": float64(7), "encoder": "test"})
	return c.write(4, c.streamID, 0, &message.DataMessage{Name: "@setDataFrame", Encoding: message.EncodingTypeAMF0, Body: body})
}

func (c *rtmpClient) unpublish() error {
	if err := c.command(3, 0, "FCUnpublish", 5, nil, "x"); err != nil {
		return err
	}
	return c.command(3, 0, "deleteStream", 6, nil, float64(c.streamID))
}

// waitClosed reads until the server closes the connection; false after d.
func (c *rtmpClient) waitClosed(d time.Duration) bool {
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 4096)
	for {
		if _, err := c.conn.Read(buf); err != nil {
			var ne net.Error
			return !errors.As(err, &ne) || !ne.Timeout()
		}
	}
}

// feeder sends synthetic H.264 (a keyframe every 30 frames) at 30 fps and AAC at about 47
// frames a second until stopped; its goroutine is owned by the test.
type feeder struct {
	c       *rtmpClient
	stop    chan struct{}
	done    chan struct{}
	sent    atomic.Int64
	pause   atomic.Bool
	stopped sync.Once
}

func startFeeder(t testing.TB, c *rtmpClient) *feeder {
	f := &feeder{c: c, stop: make(chan struct{}), done: make(chan struct{})}
	if err := c.metadata(320, 240); err != nil {
		t.Fatal(err)
	}
	if err := c.video(0, rtmptest.AVCTag(true, 0, 0, rtmptest.AVCConfigRecord(rtmptest.SPS, rtmptest.PPS))); err != nil {
		t.Fatal(err)
	}
	if err := c.audio(0, rtmptest.AACTag(0, rtmptest.ASC)); err != nil {
		t.Fatal(err)
	}
	go f.run()
	t.Cleanup(f.close)
	return f
}

func (f *feeder) run() {
	defer close(f.done)
	tick := time.NewTicker(33 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	for frame := 0; ; frame++ {
		select {
		case <-f.stop:
			return
		case <-tick.C:
		}
		if f.pause.Load() {
			continue
		}
		ts := uint32(time.Since(start).Milliseconds())
		var tag []byte
		if frame%30 == 0 {
			tag = rtmptest.AVCTag(true, 1, 0, rtmptest.LengthPrefixed(rtmptest.FakeIDR(3000)))
		} else {
			tag = rtmptest.AVCTag(false, 1, 0, rtmptest.LengthPrefixed(rtmptest.FakeSlice(400)))
		}
		if f.c.video(ts, tag) != nil {
			return
		}
		if f.c.audio(ts, rtmptest.AACTag(1, make([]byte, 200))) != nil {
			return
		}
		f.sent.Add(1)
	}
}

func (f *feeder) close() {
	f.stopped.Do(func() {
		close(f.stop)
		<-f.done
	})
}
