// Package transcode is the transcoding worker: it converts a track into a codec its readers can
// take (AAC to Opus for WebRTC viewers, Opus to AAC and VP8/VP9/H.265 to H.264 for RTMP and
// browsers) with ffmpeg as a child process, fed through stdin and read from stdout.
//
// A conversion is a derived track (sfu.Track.Derive) of its source: started lazily by the first
// reader, shared by every reader of the same source and codec, stopped after the last one
// releases it. Timestamps go through ffmpeg unchanged (-copyts), so the derived track stays on
// the source's clock. A crashed or stuck ffmpeg is restarted with backoff.
package transcode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-media/sluice/egress"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
)

// DefaultStallTimeout is how long ffmpeg may write nothing while input flows before it is
// killed and restarted.
const DefaultStallTimeout = 5 * time.Second

// Options build a Manager.
type Options struct {
	Config egress.TranscodeConfig
	Logger *slog.Logger
	// Backoff paces restarts after a crash (egress.DefaultBackoff when zero).
	Backoff egress.Backoff
	// StallTimeout kills a process that wrote nothing for this long while input flowed
	// (DefaultStallTimeout when zero).
	StallTimeout time.Duration
}

// Manager runs the conversions; it implements sfu.Transcoder. New starts nothing: conversions
// start with the first Transcode of a source and codec, each in its own goroutine owned by the
// manager. Run (or Close) stops them all and waits for them. Safe for concurrent use.
type Manager struct {
	cfg          egress.TranscodeConfig
	log          *slog.Logger
	backoff      egress.Backoff
	stallTimeout time.Duration

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	convs      map[convKey]*conversion  // shared conversions, by source and codec
	live       map[*conversion]struct{} // every conversion whose goroutine runs
	closed     bool
	retiredCPU time.Duration // CPU of the conversions that ended

	restarts atomic.Uint64
}

// New validates opts and returns a manager; it starts nothing.
func New(opts Options) (*Manager, error) {
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Backoff == (egress.Backoff{}) {
		opts.Backoff = egress.DefaultBackoff()
	}
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = DefaultStallTimeout
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Manager{
		cfg:          opts.Config,
		log:          opts.Logger,
		backoff:      opts.Backoff,
		stallTimeout: opts.StallTimeout,
		ctx:          ctx,
		cancel:       cancel,
		convs:        map[convKey]*conversion{},
		live:         map[*conversion]struct{}{},
	}, nil
}

// Available reports whether conversions can start: nil, or an error wrapping
// sfu.ErrNoTranscoder that says why not (disabled, or ffmpeg missing). It looks ffmpeg up
// again at each call, so installing it later is enough.
func (m *Manager) Available() error {
	_, err := m.lookPath()
	return err
}

func (m *Manager) lookPath() (string, error) {
	if !m.cfg.Enabled {
		return "", fmt.Errorf("%w: transcoding is disabled (transcode.enabled: false)", sfu.ErrNoTranscoder)
	}
	path, err := exec.LookPath(m.cfg.FFmpeg)
	if err != nil && !errors.Is(err, exec.ErrDot) {
		return "", fmt.Errorf("%w: ffmpeg not found at %q (transcode.ffmpeg)", sfu.ErrNoTranscoder, m.cfg.FFmpeg)
	}
	return path, nil
}

// Transcode implements sfu.Transcoder: src converted to the codec to as a derived track, shared
// with every other reader of the same conversion, and the release the caller calls once when
// it no longer reads the track. Errors wrap sfu.ErrNoTranscoder (disabled, ffmpeg missing,
// shutting down), ErrUnsupported, or sfu.ErrTrackClosed.
func (m *Manager) Transcode(src *sfu.Track, to string) (*sfu.Track, func(), error) {
	path, err := m.lookPath()
	if err != nil {
		return nil, nil, err
	}
	key := convKey{src: src, to: to}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, nil, fmt.Errorf("%w: the transcoder is shutting down", sfu.ErrNoTranscoder)
	}
	c := m.convs[key]
	if c == nil {
		p, err := planFor(src.Codec(), to)
		if err != nil {
			return nil, nil, err
		}
		if c, err = m.startLocked(key, p, path); err != nil {
			return nil, nil, err
		}
	}
	c.refs++
	var once sync.Once
	return c.out, func() { once.Do(func() { m.release(c) }) }, nil
}

// startLocked creates the derived track and starts the conversion's goroutine; m.mu held.
func (m *Manager) startLocked(key convKey, p plan, path string) (*conversion, error) {
	src := key.src
	w, h := src.Size()
	name := p.to
	if src.Name() != "" {
		name = src.Name() + " as " + p.to
	}
	out, end, err := src.Derive(sfu.TrackSpec{Codec: p.out, Name: name, Width: w, Height: h, CacheGOP: p.video()})
	if err != nil {
		return nil, err
	}
	writer, err := media.NewWriter(out)
	if err != nil {
		end()
		return nil, err
	}
	reader, err := media.NewReader(p.src)
	if err != nil {
		end()
		return nil, err
	}
	ctx, cancel := context.WithCancel(m.ctx)
	part := src.Participant()
	c := &conversion{
		m:         m,
		key:       key,
		plan:      p,
		src:       src,
		out:       out,
		end:       end,
		log:       m.log.With("room", part.Room().Name(), "participant", part.Identity(), "track", src.SID(), "conversion", p.String()),
		ctx:       ctx,
		cancel:    cancel,
		done:      make(chan struct{}),
		reader:    reader,
		tl:        newTimeline(src.Codec().ClockRate, p.out.ClockRate),
		writer:    writer,
		startedAt: time.Now(),
		ffmpeg:    path,
	}
	c.onFrame = c.frame
	m.convs[key] = c
	m.live[c] = struct{}{}
	m.wg.Add(1)
	go c.run()
	return c, nil
}

// release drops one reader of c; the last one stops it.
func (m *Manager) release(c *conversion) {
	m.mu.Lock()
	c.refs--
	last := c.refs == 0
	if last && m.convs[c.key] == c {
		delete(m.convs, c.key)
	}
	m.mu.Unlock()
	if last {
		c.cancel()
	}
}

// forget removes a conversion whose goroutine is ending.
func (m *Manager) forget(c *conversion) {
	c.cancel()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.convs[c.key] == c {
		delete(m.convs, c.key)
	}
	if _, ok := m.live[c]; ok {
		delete(m.live, c)
		m.retiredCPU += c.cpu()
	}
}

// Run waits until ctx ends, then stops every conversion (Close).
func (m *Manager) Run(ctx context.Context) error {
	<-ctx.Done()
	m.Close()
	return nil
}

// Close stops every conversion, ending their derived tracks, and waits for them; later
// Transcode calls fail. Idempotent.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
}

// Status returns the running conversions, oldest first.
func (m *Manager) Status() []ConversionStatus {
	m.mu.Lock()
	out := make([]ConversionStatus, 0, len(m.live))
	for c := range m.live {
		out = append(out, c.status(c.refs))
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].StartedAt.Before(out[j].StartedAt) })
	return out
}

// PIDs returns the process ids of the running ffmpeg processes.
func (m *Manager) PIDs() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []int
	for c := range m.live {
		if pid := c.pid.Load(); pid != 0 {
			out = append(out, int(pid))
		}
	}
	sort.Ints(out)
	return out
}

// CPU returns the CPU time all conversions' ffmpeg processes have used, ended ones included
// (sampled every second while they run).
func (m *Manager) CPU() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	total := m.retiredCPU
	for c := range m.live {
		total += c.cpu()
	}
	return total
}

var (
	descRunning  = prometheus.NewDesc("sluice_transcoders", "Running conversions (each one ffmpeg process).", nil, nil)
	descCPU      = prometheus.NewDesc("sluice_transcoder_cpu_seconds_total", "CPU time used by the transcoders' ffmpeg processes.", nil, nil)
	descRestarts = prometheus.NewDesc("sluice_transcoder_restarts_total", "ffmpeg processes restarted after a crash or a stall.", nil, nil)
)

// Describe implements prometheus.Collector.
func (m *Manager) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRunning
	ch <- descCPU
	ch <- descRestarts
}

// Collect implements prometheus.Collector.
func (m *Manager) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	running := len(m.live)
	m.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descRunning, prometheus.GaugeValue, float64(running))
	ch <- prometheus.MustNewConstMetric(descCPU, prometheus.CounterValue, m.CPU().Seconds())
	ch <- prometheus.MustNewConstMetric(descRestarts, prometheus.CounterValue, float64(m.restarts.Load()))
}
