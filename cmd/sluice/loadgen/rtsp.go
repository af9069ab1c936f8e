package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/pion/rtp"
)

// defaultRTSPPort is the RTSP server's port in the default config (DESIGN.md).
const defaultRTSPPort = "8554"

// rtspBase is the RTSP server a load test plays from: --rtsp-url when given, else the host of
// --server on the default RTSP port (the daemon's status does not report its listeners).
func rtspBase(server, flag string) (string, error) {
	raw := flag
	if raw == "" {
		u, err := url.Parse(server)
		if err != nil || u.Hostname() == "" {
			return "", fmt.Errorf("--server %q has no host to find the RTSP server on: give --rtsp-url", server)
		}
		raw = "rtsp://" + net.JoinHostPort(u.Hostname(), defaultRTSPPort)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "rtsp" || u.Host == "" {
		return "", fmt.Errorf("--rtsp-url must look like rtsp://HOST:PORT, not %q", raw)
	}
	return "rtsp://" + u.Host + strings.TrimRight(u.Path, "/"), nil
}

// rtspReader is one RTSP player over TCP (DESCRIBE, SETUP, PLAY) measuring what it receives.
// gortsplib's reader goroutine calls onPacket, serially; counters and close run on the load
// test's goroutine. The reader adds no allocation of its own per packet (gortsplib decodes each
// packet into a new rtp.Packet).
type rtspReader struct {
	c        *gortsplib.Client
	started  time.Time
	setup    atomic.Int64 // nanoseconds from the connection to the first video packet
	failed   atomic.Bool
	closing  atomic.Bool
	stopCtx  func() bool // stops closing the client with the load test's context
	watching sync.WaitGroup

	mu         sync.Mutex
	video      streamStats
	audio      streamStats
	lastErr    error
	decodeErrs int64
	token      string // kept out of errors
}

// readRTSP plays rawURL (rtsp://host:port/room) over TCP; token, when set, goes in the query
// (DESIGN.md: a play in key mode needs an access token with the subscribe grant). It never
// returns nil: a reader that could not start is marked failed with its error.
func readRTSP(ctx context.Context, rawURL, token string) *rtspReader {
	r := &rtspReader{started: time.Now(), token: token}
	r.video.clockRate, r.audio.clockRate = 90000, 48000
	full := rawURL
	if token != "" {
		full += "?token=" + url.QueryEscape(token)
	}
	fail := func(err error) *rtspReader {
		r.fail(err)
		r.close()
		return r
	}
	u, err := base.ParseURL(full)
	if err != nil {
		r.fail(fmt.Errorf("rtsp url: %w", err))
		return r
	}
	tcp := gortsplib.TransportTCP
	var dialer net.Dialer
	r.c = &gortsplib.Client{
		Scheme: u.Scheme, Host: u.Host, Transport: &tcp,
		DialContext: func(_ context.Context, network, addr string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		},
		OnPacketsLost: func(uint64) {}, // counted from the sequence numbers
		OnDecodeError: func(error) { r.mu.Lock(); r.decodeErrs++; r.mu.Unlock() },
		UserAgent:     "sluice-loadtest",
	}
	if err := r.c.Start2(); err != nil {
		r.c = nil
		r.fail(err)
		return r
	}
	r.stopCtx = context.AfterFunc(ctx, r.c.Close)
	desc, _, err := r.c.Describe(u)
	if err != nil {
		return fail(fmt.Errorf("describe: %w", err))
	}
	if err := r.c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		return fail(fmt.Errorf("setup: %w", err))
	}
	for _, m := range desc.Medias {
		st := &r.audio
		if m.Type == description.MediaTypeVideo {
			st = &r.video
		}
		if rate := m.Formats[0].ClockRate(); rate > 0 {
			st.clockRate = float64(rate)
		}
		video := st == &r.video
		for _, f := range m.Formats {
			r.c.OnPacketRTP(m, f, func(pkt *rtp.Packet) { r.onPacket(st, video, pkt) })
		}
	}
	if _, err := r.c.Play(nil); err != nil {
		return fail(fmt.Errorf("play: %w", err))
	}
	r.watching.Add(1)
	go func() {
		defer r.watching.Done()
		err := r.c.Wait()
		if !r.closing.Load() {
			r.fail(fmt.Errorf("the session ended: %w", err))
		}
	}()
	return r
}

// onPacket counts one packet; it runs on gortsplib's reader goroutine.
func (r *rtspReader) onPacket(st *streamStats, video bool, pkt *rtp.Packet) {
	now := time.Now()
	r.mu.Lock()
	st.add(pkt.SequenceNumber, pkt.Timestamp, pkt.MarshalSize(), now)
	r.mu.Unlock()
	if video {
		r.setup.CompareAndSwap(0, int64(now.Sub(r.started)))
	}
}

func (r *rtspReader) fail(err error) {
	r.failed.Store(true)
	r.mu.Lock()
	if r.lastErr == nil {
		r.lastErr = redact(err, r.token)
	}
	r.mu.Unlock()
}

// counters returns the video and audio counters as streamCounters does for WHEP viewers.
func (r *rtspReader) counters() (video, audio [4]float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return statsCounters(&r.video), statsCounters(&r.audio)
}

func (r *rtspReader) result() (setupNs int64, failed bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.setup.Load(), r.failed.Load(), r.lastErr
}

// outcome: the load test tells neither refusals nor shedding of RTSP readers apart from
// failures.
func (r *rtspReader) outcome() (refused, shed bool) { return false, false }

// close ends the session (gortsplib's Close waits for its goroutines) and the watcher.
func (r *rtspReader) close() {
	if r.c == nil {
		return
	}
	r.closing.Store(true)
	if r.stopCtx != nil {
		r.stopCtx()
	}
	r.c.Close()
	r.watching.Wait()
}

// redact removes the token from an error that may quote the URL.
func redact(err error, token string) error {
	if err == nil || token == "" || !strings.Contains(err.Error(), token) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), token, "REDACTED"))
}
