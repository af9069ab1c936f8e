package rtmp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/egress/egresstest"
	"github.com/sluice-media/sluice/sfu/rtmpproto"
)

// recordingConn keeps what the server sent, for the fuzz corpus.
type recordingConn struct {
	net.Conn
	mu  sync.Mutex
	got bytes.Buffer
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.got.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

// TestPublishToNginx publishes to nginx-rtmp: the setup completes, media is accepted, the
// stream key does not appear in what the connection reports, and Close is polite.
func TestPublishToNginx(t *testing.T) {
	p := egresstest.StartPlatform(t, egresstest.PlatformOptions{})
	target, err := ParseURL(p.URL("sk-test-123456"))
	if err != nil {
		t.Fatal(err)
	}
	var rec *recordingConn
	opts := Options{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		rec = &recordingConn{Conn: c}
		return rec, nil
	}}
	c, err := Publish(context.Background(), target, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WriteMetadata(rtmpproto.Metadata(640, 360, 30, 48000, 2)); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteAudio(0, nil, rtmpproto.AACSequenceHeader([]byte{0x11, 0x90})); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := c.WriteAudio(uint32(i*21), nil, rtmpproto.AppendAACFrame(nil, make([]byte, 300))); err != nil {
			t.Fatal(err)
		}
	}
	if c.BytesSent() < 50*300 {
		t.Errorf("bytes sent %d", c.BytesSent())
	}
	select {
	case <-c.Done():
		t.Fatalf("connection ended: %v", c.Err())
	default:
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(c.Err(), ErrClosed) {
		t.Errorf("after Close: %v", c.Err())
	}
	if os.Getenv("SLUICE_WRITE_CORPUS") != "" {
		rec.mu.Lock()
		b := rec.got.Bytes()[1+1536+1536:] // after S0, S1, S2: the chunk stream
		writeCorpus(t, "FuzzChunkReader", "nginx_publish", b)
		rec.mu.Unlock()
	}
}

// TestPublishRefused: nginx's on_publish answers 403: Publish fails with ErrRefusedByClose.
func TestPublishRefused(t *testing.T) {
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusForbidden) }))
	defer auth.Close()
	p := egresstest.StartPlatform(t, egresstest.PlatformOptions{OnPublish: auth.URL})
	target, _ := ParseURL(p.URL("sk-refused-98765"))
	_, err := Publish(context.Background(), target, Options{})
	if !errors.Is(err, ErrRefusedByClose) {
		t.Fatalf("err %v, want ErrRefusedByClose", err)
	}
	if strings.Contains(err.Error(), "sk-refused-98765") {
		t.Errorf("the error shows the key: %v", err)
	}
}

// TestWriteDeadline: a server that accepts the publish and then stops reading fails the
// connection within the write timeout instead of blocking the writer.
func TestWriteDeadline(t *testing.T) {
	p := egresstest.StartPlatform(t, egresstest.PlatformOptions{})
	target, _ := ParseURL(p.URL("k-deadline"))
	c, err := Publish(context.Background(), target, Options{WriteTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Resume() }()
	frame := make([]byte, 256<<10)
	start := time.Now()
	var werr error
	for time.Since(start) < 30*time.Second && werr == nil {
		werr = c.WriteVideo(0, nil, frame)
	}
	if werr == nil || !strings.Contains(werr.Error(), "stopped reading") {
		t.Fatalf("write error %v", werr)
	}
	t.Logf("stalled write failed after %v", time.Since(start).Round(time.Millisecond))
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in, addr, app, stream, shown string
		ok                           bool
	}{
		{"rtmp://live.twitch.tv/app/live_123_abc", "live.twitch.tv:1935", "app", "live_123_abc", "rtmp://live.twitch.tv/app/***", true},
		{"rtmps://a.rtmps.youtube.com/live2/xxxx-yyyy", "a.rtmps.youtube.com:443", "live2", "xxxx-yyyy", "rtmps://a.rtmps.youtube.com/live2/***", true},
		{"rtmps://live-api-s.facebook.com:443/rtmp/FB-1-0?s_bl=1&a=x", "live-api-s.facebook.com:443", "rtmp", "FB-1-0?s_bl=1&a=x", "rtmps://live-api-s.facebook.com:443/rtmp/***", true},
		{"rtmp://127.0.0.1:19350/live/a/b", "127.0.0.1:19350", "live", "a/b", "rtmp://127.0.0.1:19350/live/***", true},
		{"http://x/app/key", "", "", "", "", false},
		{"rtmp://x/app", "", "", "", "", false},
		{"rtmp://user:pw@x/app/key", "", "", "", "", false},
		{"rtmp:///app/key", "", "", "", "", false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseURL(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("err %v", err)
			}
			if err != nil {
				if strings.Contains(err.Error(), "key") && strings.Contains(err.Error(), tc.in) {
					t.Errorf("error quotes the url: %v", err)
				}
				return
			}
			if got.Addr != tc.addr || got.App != tc.app || got.Stream != tc.stream || got.Redacted() != tc.shown || fmt.Sprint(got) != tc.shown {
				t.Errorf("got %+v (%s)", got, got.Redacted())
			}
			if s := got.Scrub("publish " + tc.stream + " refused"); strings.Contains(s, tc.stream) {
				t.Errorf("scrub left the key: %s", s)
			}
		})
	}
}

// writeCorpus writes one seed of a fuzz target's committed corpus.
func writeCorpus(t *testing.T, target, name string, b []byte) {
	t.Helper()
	dir := filepath.Join("..", "..", "sfu", "rtmpproto", "testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
	if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
