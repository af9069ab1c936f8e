package composite

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"

	"github.com/sluice-media/sluice/egress/transcode"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
)

// stallTimeout is how long the encoder may go without output before it is killed.
const stallTimeout = 5 * time.Second

// Payload types of the composite's tracks (the WebRTC edge rewrites them).
const (
	ptVideo = 96
	ptAAC   = 97
)

// sink is where the composer and the mixer write the running encoder's input: raw pictures and
// samples. A write to an encoder that ended fails, and the next encoder gets a new sink.
type sink struct {
	video, audio io.WriteCloser
	start        time.Time // wall time of the encoder's time 0
	base         int64     // the composite's time at start, in 90 kHz ticks: where its output continues
}

// encoderArgs are ffmpeg's arguments: raw pictures on stdin, raw samples on fd 3, MPEG-TS of
// H.264 (Constrained Baseline, no B-frames: what WebRTC viewers take) and AAC on stdout.
func (c *Composite) encoderArgs() []string {
	s := c.spec
	gop := strconv.Itoa(max(1, int(s.KeyframeInterval.Seconds()*float64(s.FPS))))
	rate := strconv.Itoa(s.BitrateKbps) + "k"
	buf := strconv.Itoa(2*s.BitrateKbps) + "k"
	return []string{"-hide_banner", "-loglevel", "error",
		"-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", fmt.Sprintf("%dx%d", s.Width, s.Height),
		"-framerate", strconv.Itoa(s.FPS), "-thread_queue_size", "64", "-i", "pipe:0",
		"-f", "s16le", "-ar", strconv.Itoa(sampleRate), "-ac", "2", "-thread_queue_size", "256", "-i", "pipe:3",
		"-map", "0:v", "-map", "1:a",
		"-c:v", "libx264", "-preset", "superfast", "-tune", "zerolatency", "-profile:v", "baseline",
		"-pix_fmt", "yuv420p", "-g", gop, "-keyint_min", gop, "-sc_threshold", "0",
		"-b:v", rate, "-maxrate", rate, "-bufsize", buf,
		"-c:a", "aac", "-b:a", "128k", "-ar", strconv.Itoa(sampleRate), "-ac", "2",
		"-f", "mpegts", "-muxdelay", "0", "-muxpreload", "0", "-pes_payload_size", "0", "-flush_packets", "1", "pipe:1"}
}

// runEncoder runs one encoder process until it ends, stalls or ctx ends; its output becomes the
// composite participant's tracks.
func (c *Composite) runEncoder(parent context.Context) error {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	cmd := exec.CommandContext(ctx, c.m.cfg.FFmpeg, c.encoderArgs()...) //nolint:gosec // the configured ffmpeg with our arguments
	cmd.WaitDelay = 2 * time.Second
	audioR, audioW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer func() { _ = audioR.Close() }()
	cmd.ExtraFiles = []*os.File{audioR}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		_ = audioW.Close()
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		_ = audioW.Close()
		return err
	}
	stderr := &transcode.StderrTail{Log: c.log}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		_ = audioW.Close()
		return fmt.Errorf("starting ffmpeg: %w", err)
	}
	_ = audioR.Close() // the child has it
	c.encPID.Store(int64(cmd.Process.Pid))
	start := time.Now()
	s := &sink{video: stdin, audio: audioW, start: start, base: c.since(start)}
	c.sink.Store(s)
	defer func() {
		c.sink.CompareAndSwap(s, nil)
		_ = stdin.Close()
		_ = audioW.Close()
	}()

	var lastOut atomic.Int64
	lastOut.Store(time.Now().UnixNano())
	readErr := make(chan error, 1)
	go func() {
		readErr <- c.readEncoder(bufio.NewReaderSize(stdout, 64<<10), s, &lastOut)
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var result error
wait:
	for {
		select {
		case err := <-readErr:
			result = err
			break wait
		case <-tick.C:
			if time.Since(time.Unix(0, lastOut.Load())) > stallTimeout {
				cancel(errors.New("stalled: no output for " + stallTimeout.String()))
			}
		case <-ctx.Done():
			result = context.Cause(ctx)
			if err := <-readErr; err != nil { // the reader ends with the process
				c.log.Debug("composite: encoder output ended", "err", err)
			}
			break wait
		}
	}
	cancel(nil)
	_ = cmd.Wait()
	if parent.Err() != nil {
		return nil // the composite closes
	}
	if result == nil || errors.Is(result, io.EOF) {
		result = errors.New("ffmpeg ended")
	}
	return fmt.Errorf("%w%s", result, stderr)
}

// readEncoder turns the encoder's MPEG-TS into the composite's tracks.
func (c *Composite) readEncoder(r io.Reader, s *sink, lastOut *atomic.Int64) error {
	first := true
	return readTS(r, s.base, &c.out, func() {
		if first {
			first = false
			c.log.Debug("composite: encoder output", "after", time.Since(s.start))
		}
		lastOut.Store(time.Now().UnixNano())
	})
}

// readTS publishes the H.264 and AAC of an MPEG-TS through out, its timestamps moved to start at
// base (90 kHz); onVideo is called at each video frame.
func readTS(r io.Reader, base int64, out *output, onVideo func()) error {
	rd := &mpegts.Reader{R: r}
	if err := rd.Initialize(); err != nil {
		return err
	}
	var td mpegts.TimeDecoder
	for _, tr := range rd.Tracks() {
		switch codec := tr.Codec.(type) {
		case *mpegts.CodecH264:
			rd.OnDataH264(tr, func(pts, _ int64, au [][]byte) error {
				onVideo()
				return out.writeVideo(base+td.Decode(pts), au)
			})
		case *mpegts.CodecMPEG4Audio:
			cfg := codec.Config
			rd.OnDataMPEG4Audio(tr, func(pts int64, aus [][]byte) error {
				return out.writeAudio(&cfg, base+td.Decode(pts), aus)
			})
		}
	}
	for {
		if err := rd.Read(); err != nil {
			return err
		}
	}
}

// output is the composite participant's tracks, published at the first frame of each kind and
// kept across encoder restarts. It is owned by the encoder's reader goroutine (one at a time).
type output struct {
	self *sfu.Participant
	vw   *media.Writer
	aw   *media.Writer
}

func (o *output) writeVideo(ticks int64, au [][]byte) error {
	if o.vw == nil {
		sps, pps := nalu(au, 7), nalu(au, 8)
		if sps == nil || pps == nil {
			return nil // the encoder starts with a keyframe; until then nothing can be read
		}
		t, err := o.self.Publish(sfu.TrackSpec{Codec: media.H264Codec(sps, pps, ptVideo), Name: "composite-video", CacheGOP: true})
		if err != nil {
			return err
		}
		w, err := media.NewWriter(t)
		if err != nil {
			return err
		}
		o.vw = w
	}
	if err := o.vw.Write(uint32(ticks), au); err != nil {
		return nil //nolint:nilerr // a frame the packetizer refuses is dropped, the stream goes on
	}
	return nil
}

func (o *output) writeAudio(cfg *mpeg4audio.AudioSpecificConfig, ticks int64, aus [][]byte) error {
	if o.aw == nil {
		raw, err := cfg.Marshal()
		if err != nil {
			return err
		}
		t, err := o.self.Publish(sfu.TrackSpec{Codec: media.AACCodec(raw, cfg.SampleRate, cfg.ChannelCount, ptAAC), Name: "composite-audio"})
		if err != nil {
			return err
		}
		w, err := media.NewWriter(t)
		if err != nil {
			return err
		}
		o.aw = w
	}
	ts := ticks * int64(sampleRate) / 90000
	if err := o.aw.Write(uint32(ts), aus); err != nil {
		return nil //nolint:nilerr // as for video
	}
	return nil
}

// nalu returns the first H.264 NAL unit of type typ in au.
func nalu(au [][]byte, typ byte) []byte {
	for _, n := range au {
		if len(n) > 0 && n[0]&0x1f == typ {
			return n
		}
	}
	return nil
}
