package transcode

import (
	"bufio"
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

	tail := &lineTail{}
	var readers sync.WaitGroup
	readers.Add(2)
	go func() {
		defer readers.Done()
		tail.collect(stderr, log)
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

// lineTail keeps a process's last stderr lines and logs them at debug level, rate-limited so
// that a warning ffmpeg repeats per packet cannot flood the log.
type lineTail struct {
	mu    sync.Mutex
	lines []string
}

func (t *lineTail) collect(r io.Reader, log *slog.Logger) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	n, suppressed := 0, 0
	var lastLog time.Time
	for sc.Scan() {
		line := strings.TrimSpace(strings.ReplaceAll(sc.Text(), "\r", " "))
		if line == "" {
			continue
		}
		t.mu.Lock()
		t.lines = append(t.lines, line)
		if len(t.lines) > tailLines {
			t.lines = t.lines[len(t.lines)-tailLines:]
		}
		t.mu.Unlock()
		n++
		if now := time.Now(); n <= logBurst || now.Sub(lastLog) >= time.Second {
			log.Debug("ffmpeg", "line", line, "suppressed", suppressed)
			lastLog, suppressed = now, 0
		} else {
			suppressed++
		}
	}
	_, _ = io.Copy(io.Discard, r) // a line longer than the scanner's limit: keep the pipe flowing
}

// String returns ": " and the last lines joined, or "" when ffmpeg said nothing.
func (t *lineTail) String() string {
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
