package composite

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/sluice-media/sluice/egress/transcode"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
)

// decodable are the codecs the decoders take as they are.
func decodable(k sfu.Kind) func(c sfu.Codec) bool {
	return func(c sfu.Codec) bool {
		switch c.Name {
		case sfu.CodecH264, sfu.CodecH265, sfu.CodecVP8, sfu.CodecVP9:
			return k == sfu.KindVideo
		case sfu.CodecOpus, sfu.CodecAAC, sfu.CodecPCMU, sfu.CodecPCMA:
			return k == sfu.KindAudio
		}
		return false
	}
}

// decoder turns one leg of a participant (its video or its audio track) into raw pictures or
// samples through an ffmpeg child: the leg's sink feeds it frames, a reader goroutine takes
// its output. A track switch or a crashed process starts a new process at the next keyframe.
// WritePacket runs on the subscription's goroutine; close on the owner's, after the leg's
// subscription has ended.
type decoder struct {
	kind   sfu.Kind
	ffmpeg string
	log    *slog.Logger
	w, h   int // video: the picture size it outputs

	// onPicture takes a decoded picture and gives back a frame of the same size to decode the
	// next one into (video).
	onPicture func(*frame) *frame
	onSamples func(b []byte) // audio: s16le mono 48 kHz

	// Owned by the sink's goroutine.
	src     *sfu.Track
	reader  media.Reader
	unwrap  media.Unwrapper
	first   int64
	started bool
	proc    *process
	feeder  *transcode.Feeder
	lastTry time.Time
	pcm     []byte // G.711: the frame brought to 48 kHz s16le

	mu      sync.Mutex
	switchT *sfu.Track // the track Switched announced, picked up by the next packet
	closed  bool
	cur     *process // the running process, for close
}

// process is one running ffmpeg with its output reader.
type process struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	cancel context.CancelFunc
	done   chan struct{} // the output reader ended
}

// switched is the leg's Switched: the next packet comes from src.
func (d *decoder) switched(src *sfu.Track) {
	d.mu.Lock()
	d.switchT = src
	d.mu.Unlock()
}

// WritePacket feeds one packet of the leg's track to ffmpeg (the leg's Sink). It never fails
// the subscription: a frame ffmpeg cannot take is dropped and the process restarted.
func (d *decoder) WritePacket(p *sfu.Packet, gap bool) error {
	d.mu.Lock()
	sw, closed := d.switchT, d.closed
	d.switchT = nil
	d.mu.Unlock()
	if closed {
		return nil
	}
	if sw != nil && sw != d.src {
		d.stop()
		d.src, d.reader = sw, nil
	}
	if d.src == nil {
		return nil
	}
	if d.reader == nil {
		r, err := media.NewReader(d.src.Codec())
		if err != nil {
			return nil // not a codec this leg takes: Takes keeps it out
		}
		d.reader, d.unwrap, d.started = r, media.Unwrapper{}, false
	}
	if gap && d.kind == sfu.KindVideo {
		d.src.RequestKeyframe()
	}
	d.reader.Push(p, d.unwrap.Unwrap(p.Header.Timestamp), gap, d.frame)
	return nil
}

// frame writes one frame to the running process, starting one first when needed.
func (d *decoder) frame(f *media.Frame) {
	if c := d.src.Codec().Name; c == sfu.CodecPCMU || c == sfu.CodecPCMA {
		d.linear(f) // already samples: no process
		return
	}
	if d.proc == nil {
		if d.kind == sfu.KindVideo && !f.Key {
			d.src.RequestKeyframe()
			return
		}
		if time.Since(d.lastTry) < time.Second {
			return // a process that keeps failing is retried once a second
		}
		d.lastTry = time.Now()
		if err := d.start(); err != nil {
			d.log.Warn("composite: decoder did not start", "kind", d.kind, "err", err)
			return
		}
	}
	if !d.started {
		d.first, d.started = f.DTS, true
	}
	rate := int64(d.src.Codec().ClockRate)
	if rate <= 0 {
		rate = 90000
	}
	pts := (f.PTS - d.first) * 90000 / rate
	dts := (f.DTS - d.first) * 90000 / rate
	if err := d.feeder.Write(pts, dts, f); err != nil {
		d.log.Debug("composite: decoder input closed", "kind", d.kind, "err", err)
		d.stop() // the next keyframe starts another
	}
}

// linear hands over a G.711 frame, which the reader made 16-bit big-endian linear samples at
// the track's rate (8 kHz, mono as G.711 is), as 48 kHz little-endian: each sample repeated
// with linear steps to the next.
func (d *decoder) linear(f *media.Frame) {
	rate := int(d.src.Codec().ClockRate)
	if rate <= 0 || sampleRate%rate != 0 {
		return
	}
	up := sampleRate / rate
	n := len(f.Data) / 2
	d.pcm = d.pcm[:0]
	for i := range n {
		cur := int(int16(uint16(f.Data[2*i])<<8 | uint16(f.Data[2*i+1])))
		next := cur
		if i+1 < n {
			next = int(int16(uint16(f.Data[2*i+2])<<8 | uint16(f.Data[2*i+3])))
		}
		for k := range up {
			v := uint16(int16(cur + (next-cur)*k/up))
			d.pcm = append(d.pcm, byte(v), byte(v>>8))
		}
	}
	d.onSamples(d.pcm)
}

// args are ffmpeg's arguments for input in container format.
func (d *decoder) args(format string) []string {
	a := []string{"-hide_banner", "-loglevel", "error", "-threads", "1", "-fflags", "nobuffer", "-flags", "low_delay",
		"-probesize", "32", "-analyzeduration", "0"}
	if d.kind == sfu.KindVideo {
		// A tile is at most half the picture: the deblocking filter's work does not show once
		// scaled down, and skipping it saves a fifth of the decoding.
		a = append(a, "-skip_loop_filter", "all")
	}
	a = append(a, "-f", format, "-i", "pipe:0")
	if d.kind == sfu.KindVideo {
		w, h := strconv.Itoa(d.w), strconv.Itoa(d.h)
		return append(a, "-an", "-vf",
			"scale="+w+":"+h+":force_original_aspect_ratio=decrease:flags=fast_bilinear,pad="+w+":"+h+":(ow-iw)/2:(oh-ih)/2,format=yuv420p",
			"-fps_mode", "passthrough", "-f", "rawvideo", "-flush_packets", "1", "pipe:1")
	}
	return append(a, "-vn", "-ac", "1", "-ar", strconv.Itoa(sampleRate), "-f", "s16le", "-flush_packets", "1", "pipe:1")
}

func (d *decoder) start() error {
	c := d.src.Codec()
	var aac *media.AACParams
	if c.Name == sfu.CodecAAC {
		var err error
		if aac, err = media.ParseAAC(c); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	pr := &process{cancel: cancel, done: make(chan struct{})}
	pipe := &lazyWriter{}
	feeder, err := transcode.NewFeeder(pipe, c, aac)
	if err != nil {
		cancel()
		return err
	}
	pr.cmd = exec.CommandContext(ctx, d.ffmpeg, d.args(feeder.Format())...) //nolint:gosec // the configured ffmpeg with our arguments
	pr.cmd.WaitDelay = 2 * time.Second
	stdin, err := pr.cmd.StdinPipe()
	if err != nil {
		cancel()
		return err
	}
	pr.stdin = stdin
	stdout, err := pr.cmd.StdoutPipe()
	if err != nil {
		cancel()
		return err
	}
	stderr := &transcode.StderrTail{Log: d.log}
	pr.cmd.Stderr = stderr
	if err := pr.cmd.Start(); err != nil {
		cancel()
		return fmt.Errorf("starting ffmpeg: %w", err)
	}
	d.mu.Lock() // not across Start: close must not wait for a fork
	closed := d.closed
	if !closed {
		d.cur = pr
	}
	d.mu.Unlock()
	if closed { // closed meanwhile: this process is nobody's
		cancel()
		_ = pr.cmd.Wait()
		return errors.New("closed")
	}
	pipe.w = stdin
	d.proc, d.feeder, d.started = pr, feeder, false
	go func() {
		defer close(pr.done)
		var err error
		if d.kind == sfu.KindVideo {
			err = d.read(stdout) // whole pictures: read straight into them
		} else {
			err = d.read(bufio.NewReaderSize(stdout, 4<<10))
		}
		_ = pr.cmd.Wait()
		if ctx.Err() == nil { // not stopped by us: ffmpeg gave up on its input
			d.log.Warn("composite: decoder ended", "kind", d.kind, "err", err, "ffmpeg", stderr.String())
		}
	}()
	return nil
}

// read takes the process's output until it ends.
func (d *decoder) read(r io.Reader) error {
	if d.kind == sfu.KindVideo {
		pic := newFrame(d.w, d.h)
		for {
			if _, err := io.ReadFull(r, pic.buf); err != nil {
				return err
			}
			pic = d.onPicture(pic)
		}
	}
	buf := make([]byte, 1920)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			d.onSamples(buf[:n&^1])
		}
		if err != nil {
			return err
		}
	}
}

// stop ends the running process and waits for its reader (the sink's goroutine).
func (d *decoder) stop() {
	if d.proc == nil {
		return
	}
	d.proc.end()
	d.mu.Lock()
	d.cur = nil
	d.mu.Unlock()
	d.proc, d.feeder = nil, nil
}

// end kills the process and waits for its reader; it may run twice, concurrently.
func (p *process) end() {
	_ = p.stdin.Close()
	p.cancel()
	<-p.done
}

// close ends the decoder for good, from any goroutine: the running process is killed (a sink
// blocked writing to it returns) and no other starts.
func (d *decoder) close() {
	d.mu.Lock()
	d.closed = true
	p := d.cur
	d.mu.Unlock()
	if p != nil {
		p.end()
	}
}

// lazyWriter is the stdin a feeder writes to, set once the process runs.
type lazyWriter struct{ w io.Writer }

func (l *lazyWriter) Write(b []byte) (int, error) { return l.w.Write(b) }
