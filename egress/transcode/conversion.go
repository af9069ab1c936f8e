package transcode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-media/sluice/egress"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
)

// convKey identifies a shared conversion: one source track into one codec.
type convKey struct {
	src *sfu.Track
	to  string
}

// conversion is one source track converted into one codec, shared by every reader of the
// derived track. It subscribes to the source, feeds ffmpeg, and writes ffmpeg's output into the
// derived track; a supervisor restarts ffmpeg when it dies or stalls. It ends when its last
// reader releases it (the manager cancels its context), when the source ends, or when the
// manager closes; the derived track ends with it.
type conversion struct {
	m    *Manager
	key  convKey
	plan plan
	src  *sfu.Track
	out  *sfu.Track
	end  func() // ends the derived track
	log  *slog.Logger
	// ffmpeg is the binary's path, looked up when the conversion started.
	ffmpeg string

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	refs int // readers holding it, guarded by m.mu

	// Owned by the feeder (the source subscription's goroutine).
	reader  media.Reader
	unwrap  media.Unwrapper
	onFrame func(*media.Frame) // bound once: no allocation per packet
	tl      *timeline

	// input is the running ffmpeg's stdin, nil between processes.
	input atomic.Pointer[input]

	// Owned by the output reader of the running process (one at a time).
	writer    *media.Writer
	srApplied sfu.SenderReport

	// pendingSince is when input was first written after the last output (unix ns, 0 when
	// ffmpeg is caught up): the stall watchdog's clock.
	pendingSince atomic.Int64

	startedAt time.Time
	pid       atomic.Int64
	restarts  atomic.Uint64
	framesIn  atomic.Uint64
	framesOut atomic.Uint64
	cpuMu     sync.Mutex   // makes the move from cpuLive to cpuDone one step for readers
	cpuLive   atomic.Int64 // ns used by the running process, sampled
	cpuDone   atomic.Int64 // ns used by the processes that ended
	lastErr   atomic.Pointer[string]
}

// run is the conversion's goroutine: feed, supervise ffmpeg, then tear down from producer to
// consumers (stop ffmpeg, stop reading the source, end the derived track).
func (c *conversion) run() {
	defer c.m.wg.Done()
	defer close(c.done)
	defer c.m.forget(c)
	defer c.end()
	sub, err := c.src.Subscribe(sfu.SinkFunc(c.feed), sfu.SubscribeOptions{})
	if err != nil {
		c.log.Info("transcoder not started: the source ended")
		return
	}
	ctx, cancel := context.WithCancel(c.ctx)
	watched := make(chan struct{})
	go func() { // the source's end (or a failing feed) ends the conversion
		defer close(watched)
		select {
		case <-sub.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	c.log.Info("transcoder started")
	err = egress.Supervise(ctx, c.runProcess, c.m.backoff, c.onRetry)
	cancel()
	<-watched
	sub.Close()
	if err != nil {
		c.setErr(err)
		c.log.Warn("transcoder gave up", "err", err)
		return
	}
	c.log.Info("transcoder stopped", "restarts", c.restarts.Load(), "cpu", c.cpu().Round(time.Millisecond))
}

// onRetry logs and counts a restart of ffmpeg.
func (c *conversion) onRetry(r egress.Retry) {
	c.restarts.Add(1)
	c.m.restarts.Add(1)
	c.setErr(r.Err)
	c.log.Warn("transcoder restarted", "attempt", r.Attempt, "after", r.Delay.Round(time.Millisecond),
		"ran", r.Ran.Round(time.Millisecond), "err", r.Err)
}

func (c *conversion) setErr(err error) {
	s := err.Error()
	c.lastErr.Store(&s)
}

// cpu returns the CPU time used by this conversion's ffmpeg processes.
func (c *conversion) cpu() time.Duration {
	c.cpuMu.Lock()
	defer c.cpuMu.Unlock()
	return time.Duration(c.cpuDone.Load() + c.cpuLive.Load())
}

// feed is the source subscription's sink: read frames, then write them to the running ffmpeg.
// It never fails the subscription: without a process the frames are dropped. After a loss the
// reader waits for a keyframe, so one is asked for at once.
func (c *conversion) feed(p *sfu.Packet, gap bool) error {
	if gap && c.plan.video() {
		c.src.RequestKeyframe()
	}
	c.reader.Push(p, c.unwrap.Unwrap(p.Header.Timestamp), gap, c.onFrame) // a malformed packet is skipped
	return nil
}

// frame writes one source frame to the running ffmpeg.
func (c *conversion) frame(f *media.Frame) {
	in := c.input.Load()
	if in == nil || in.failed {
		return
	}
	if in.needKey {
		if !f.Key {
			c.src.RequestKeyframe()
			return
		}
		in.needKey = false
	}
	pts := c.tl.in(uint32(f.PTS))
	dts := pts - (f.PTS-f.DTS)*90000/c.tl.srcRate
	c.pendingSince.CompareAndSwap(0, time.Now().UnixNano())
	if err := in.write(pts, dts, f); err != nil {
		in.failed = true // ffmpeg is gone or going; its runner reports why
		return
	}
	c.framesIn.Add(1)
}

// emitted records an output frame for the stall watchdog and the figures.
func (c *conversion) emitted() {
	c.pendingSince.Store(0)
	c.framesOut.Add(1)
}

// applySenderReport gives the derived track the source's RTP/wall-clock mapping, in its own
// clock, when the source has one and it changed.
func (c *conversion) applySenderReport() {
	sr, ok := c.src.SenderReport()
	if !ok || sr == c.srApplied {
		return
	}
	c.srApplied = sr
	c.out.SetSenderReport(sfu.SenderReport{RTPTime: c.tl.outOfSource(sr.RTPTime), NTPTime: sr.NTPTime})
}

// errStalled ends a process that wrote nothing while input flowed.
var errStalled = errors.New("stalled")

// stallError is the error of a process killed by the watchdog.
func stallError(d time.Duration) error {
	return fmt.Errorf("ffmpeg %w: no output for %v while input flowed; killed", errStalled, d)
}

// ConversionStatus is one running conversion in /v1/status ("transcoders"): what it converts,
// how many readers share it, and what it costs.
type ConversionStatus struct {
	Room        string    `json:"room"`
	Participant string    `json:"participant"`
	SourceTrack string    `json:"source_track"`
	Track       string    `json:"track"`
	From        string    `json:"from"`
	To          string    `json:"to"`
	Readers     int       `json:"readers"`
	Subscribers int       `json:"subscribers"`
	State       string    `json:"state"`
	PID         int       `json:"pid,omitempty"`
	StartedAt   time.Time `json:"started_at"`
	Restarts    uint64    `json:"restarts"`
	CPUSeconds  float64   `json:"cpu_seconds"`
	FramesIn    uint64    `json:"frames_in"`
	FramesOut   uint64    `json:"frames_out"`
	LastError   string    `json:"last_error,omitempty"`
}

func (c *conversion) status(readers int) ConversionStatus {
	p := c.src.Participant()
	f := ConversionStatus{
		Room:        p.Room().Name(),
		Participant: p.Identity(),
		SourceTrack: c.src.SID(),
		Track:       c.out.SID(),
		From:        c.plan.from,
		To:          c.plan.to,
		Readers:     readers,
		Subscribers: len(c.out.Subscriptions()),
		State:       "restarting",
		StartedAt:   c.startedAt.UTC(),
		Restarts:    c.restarts.Load(),
		CPUSeconds:  float64(c.cpu().Milliseconds()) / 1000,
		FramesIn:    c.framesIn.Load(),
		FramesOut:   c.framesOut.Load(),
	}
	if pid := c.pid.Load(); pid != 0 {
		f.PID, f.State = int(pid), "running"
	}
	if e := c.lastErr.Load(); e != nil {
		f.LastError = *e
	}
	return f
}
