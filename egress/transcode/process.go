package transcode

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"

	"github.com/sluice-media/sluice/egress"
	"github.com/sluice-media/sluice/sfu"
)

// watchdogTick is how often a process's CPU is sampled and its progress checked.
const watchdogTick = 250 * time.Millisecond

// runProcess runs one ffmpeg process: stdin takes the source's frames from the feeder, stdout
// is read into the derived track, stderr goes to the log. It returns when ffmpeg ends, when it
// stalls (killed), or when ctx ends (killed), with an error naming the cause and ffmpeg's last
// words.
func (c *conversion) runProcess(parent context.Context) error {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	cmd := exec.CommandContext(ctx, c.ffmpeg, c.plan.args()...) //nolint:gosec // the configured ffmpeg with our arguments
	cmd.WaitDelay = 2 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting ffmpeg: %w", err)
	}
	pid := cmd.Process.Pid
	log := c.log.With("pid", pid)
	log.Debug("ffmpeg started", "args", strings.Join(c.plan.args(), " "))
	c.pendingSince.Store(0)
	c.pid.Store(int64(pid))

	tail := &StderrTail{Log: log}
	var readers sync.WaitGroup
	readers.Add(2)
	go func() {
		defer readers.Done()
		_, _ = io.Copy(tail, stderr) // until ffmpeg closes it
	}()
	go func() {
		defer readers.Done()
		if err := c.readOutput(stdout); err != nil && !errors.Is(err, io.EOF) {
			cancel(fmt.Errorf("reading ffmpeg's output: %w", err)) // kills ffmpeg
		}
	}()
	in, err := newInput(stdin, c.plan)
	if err != nil {
		cancel(err)
	} else {
		c.input.Store(in)
	}

	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		c.watch(pid, stopWatch, cancel)
	}()

	readers.Wait() // both pipes reach EOF when ffmpeg ends, killed or not
	c.input.CompareAndSwap(in, nil)
	_ = stdin.Close()
	waitErr := cmd.Wait()
	close(stopWatch)
	<-watched
	c.pid.Store(0)
	if st := cmd.ProcessState; st != nil {
		c.cpuMu.Lock()
		c.cpuDone.Add(int64(st.UserTime() + st.SystemTime()))
		c.cpuLive.Store(0)
		c.cpuMu.Unlock()
	}

	cause := context.Cause(ctx)
	switch {
	case parent.Err() != nil:
		return parent.Err() // stopping: the supervisor does not restart
	case cause != nil:
		return fmt.Errorf("%w%s", cause, tail.String())
	case waitErr != nil:
		return fmt.Errorf("ffmpeg exited: %w%s", waitErr, tail.String())
	}
	return fmt.Errorf("ffmpeg exited without an error%s", tail.String())
}

// watch samples the process's CPU and kills it when it wrote nothing for the stall timeout
// while input flowed, until stop is closed.
func (c *conversion) watch(pid int, stop <-chan struct{}, kill context.CancelCauseFunc) {
	tick := time.NewTicker(watchdogTick)
	defer tick.Stop()
	var lastSample time.Time
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			if now.Sub(lastSample) >= time.Second {
				if st, err := readProcStat(pid); err == nil {
					c.cpuMu.Lock()
					c.cpuLive.Store(int64(st.cpu))
					c.cpuMu.Unlock()
				}
				lastSample = now
			}
			if since := c.pendingSince.Load(); since != 0 && now.Sub(time.Unix(0, since)) >= c.m.stallTimeout {
				kill(stallError(c.m.stallTimeout))
			}
		}
	}
}

// readOutput reads ffmpeg's MPEG-TS output and writes its frames into the derived track with
// timestamps mapped back to the source's clock. It returns io.EOF when ffmpeg closes stdout.
func (c *conversion) readOutput(r io.Reader) error {
	tr := &mpegts.Reader{R: bufio.NewReaderSize(r, 64<<10)}
	if err := tr.Initialize(); err != nil {
		return err
	}
	var track *mpegts.Track
	for _, t := range tr.Tracks() {
		switch t.Codec.(type) {
		case *mpegts.CodecOpus:
			if c.plan.to == sfu.CodecOpus {
				track = t
			}
		case *mpegts.CodecMPEG4Audio:
			if c.plan.to == sfu.CodecAAC {
				track = t
			}
		case *mpegts.CodecH264:
			if c.plan.to == sfu.CodecH264 {
				track = t
			}
		}
	}
	if track == nil {
		return egress.Permanent(fmt.Errorf("ffmpeg's output has no %s stream", c.plan.to))
	}
	tr.OnDecodeError(func(err error) { c.log.Debug("ffmpeg output decode error", "err", err) })
	switch codec := track.Codec.(type) {
	case *mpegts.CodecOpus:
		tr.OnDataOpus(track, func(pts int64, packets [][]byte) error {
			ts := c.outTime(pts)
			for _, pkt := range packets {
				c.write(ts, [][]byte{pkt})
				ts += uint32(opus.PacketDuration2(pkt))
			}
			return nil
		})
	case *mpegts.CodecMPEG4Audio:
		if codec.Type != mpeg4audio.ObjectTypeAACLC || codec.SampleRate != int(c.out.Codec().ClockRate) || codec.ChannelCount != int(c.out.Codec().Channels) {
			return egress.Permanent(fmt.Errorf("ffmpeg made AAC type %d %d Hz %d channels, not the announced AAC-LC %d Hz %d channels",
				codec.Type, codec.SampleRate, codec.ChannelCount, c.out.Codec().ClockRate, c.out.Codec().Channels))
		}
		tr.OnDataMPEG4Audio(track, func(pts int64, aus [][]byte) error {
			c.write(c.outTime(pts), aus)
			return nil
		})
	case *mpegts.CodecH264:
		tr.OnDataH264(track, func(pts, _ int64, au [][]byte) error {
			c.learnSize(au)
			c.write(c.outTime(pts), au)
			return nil
		})
	}
	for {
		if err := tr.Read(); err != nil {
			return err
		}
	}
}

// outTime maps a presentation time of ffmpeg's output to the derived track's RTP clock, and
// keeps the derived track's sender report in step with the source's.
func (c *conversion) outTime(pts int64) uint32 {
	c.applySenderReport()
	return c.tl.out(c.tl.unwrap(pts))
}

// write packetizes one output frame into the derived track.
func (c *conversion) write(ts uint32, frame [][]byte) {
	if err := c.writer.Write(ts, frame); err != nil {
		c.log.Debug("dropped an output frame", "err", err)
		return
	}
	c.emitted()
}

// tailLines is how many of ffmpeg's last stderr lines an error quotes.
const tailLines = 8

// logBurst is how many stderr lines of one process are logged before rate limiting.
const logBurst = 50

// StderrTail keeps a process's last stderr lines, which String quotes in an error, and logs
// each at debug level, rate-limited so that a warning ffmpeg repeats per packet cannot flood
// the log. It is an io.Writer: set it as exec.Cmd.Stderr, or copy a pipe into it. Safe for
// concurrent use.
type StderrTail struct {
	// Log gets the lines (slog.Default when nil).
	Log *slog.Logger

	mu         sync.Mutex
	lines      []string
	partial    []byte
	n          int
	suppressed int
	lastLog    time.Time
}

// Write takes stderr output, a line ending at each newline or carriage return (progress).
func (t *StderrTail) Write(b []byte) (int, error) {
	var logged []string
	var suppressed []int
	t.mu.Lock()
	t.partial = append(t.partial, b...)
	for {
		i := bytes.IndexAny(t.partial, "\n\r")
		if i < 0 && len(t.partial) < 64<<10 { // a longer line is cut
			break
		}
		if i < 0 {
			i = len(t.partial)
		}
		line := strings.TrimSpace(string(t.partial[:i]))
		t.partial = t.partial[min(i+1, len(t.partial)):]
		if line == "" {
			continue
		}
		if t.lines = append(t.lines, line); len(t.lines) > tailLines {
			t.lines = t.lines[len(t.lines)-tailLines:]
		}
		if t.n++; t.n <= logBurst || time.Since(t.lastLog) >= time.Second {
			logged, suppressed = append(logged, line), append(suppressed, t.suppressed)
			t.lastLog, t.suppressed = time.Now(), 0
		} else {
			t.suppressed++
		}
	}
	t.partial = append(t.partial[:0:0], t.partial...) // do not hold what was consumed
	log := t.Log
	t.mu.Unlock()
	if log == nil {
		log = slog.Default()
	}
	for i, line := range logged { // logged outside the lock
		log.Debug("ffmpeg", "line", line, "suppressed", suppressed[i])
	}
	return len(b), nil
}

// String returns ": " and the last lines joined, or "" when ffmpeg said nothing.
func (t *StderrTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == 0 {
		return ""
	}
	return ": " + strings.Join(t.lines, " | ")
}

// learnSize records the resolution of the SPS an H.264 access unit carries on the derived
// track (for status; it changes silently).
func (c *conversion) learnSize(au [][]byte) {
	for _, n := range au {
		if len(n) == 0 || h264.NALUType(n[0]&0x1f) != h264.NALUTypeSPS {
			continue
		}
		var sps h264.SPS
		if sps.Unmarshal(n) != nil {
			return
		}
		if w, h := c.out.Size(); w != sps.Width() || h != sps.Height() {
			_ = c.src.Participant().SetTrackSize(c.out, sps.Width(), sps.Height())
		}
		return
	}
}
