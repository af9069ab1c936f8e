package broadcast

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-media/sluice/egress"
	"github.com/sluice-media/sluice/egress/rtmp"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
)

// Destination states.
const (
	destConnecting   = "connecting"
	destActive       = "active"
	destReconnecting = "reconnecting"
	destFailed       = "failed"
	destEnded        = "ended"
)

// reportKind is what a destination's worker tells its broadcast.
type reportKind int

const (
	reportActive       reportKind = iota // the platform accepted the publish
	reportReconnecting                   // the connection failed or dropped; a retry is scheduled
	reportFailed                         // the destination gave up (refusal, retries exhausted)
)

type report struct {
	d       *destination
	kind    reportKind
	attempt int
	err     error
}

// destination is one RTMP/RTMPS URL of a broadcast: a worker that connects and reconnects
// under egress.Supervise, and the subscriptions that feed its mux. The broadcast's goroutine
// creates it, binds it to sources and ends it; the worker goroutine reports to the broadcast.
type destination struct {
	id     string
	target rtmp.Target
	raw    string // the URL as given: a secret, compared by Update, never shown
	b      *Broadcast
	log    *slog.Logger

	mu         sync.Mutex // guards the media state below; also the connection's write lock
	m          *mux
	vsub, asub *sfu.Subscription
	vr, ar     media.Reader // nil: the binding has no such track
	vseq, aseq media.Sequence
	arrival    int64
	emitV      func(*media.Frame) // bound once: no allocation per packet
	emitA      func(*media.Frame)

	conn      atomic.Pointer[rtmp.Conn]
	sentDone  atomic.Int64 // bytes of the connections that ended
	downSince time.Time    // worker-owned: when the destination last lost (or never had) a connection
	lastErr   error        // worker-owned

	// Guarded by the broadcast's mu.
	status     string
	reconnects int
	errInfo    *sfu.ErrorInfo

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

func newDestination(b *Broadcast, raw string, t rtmp.Target) *destination {
	d := &destination{
		id:     sfu.NewID("DST_"),
		target: t,
		raw:    raw,
		b:      b,
		m:      newMux(b.epoch),
		status: destConnecting,
		done:   make(chan struct{}),
	}
	d.log = b.log.With("destination", d.id, "url", t.Redacted())
	d.emitV = d.writeVideo
	d.emitA = d.writeAudio
	return d
}

// start runs the worker until ctx ends or the destination gives up.
func (d *destination) start(ctx context.Context) {
	d.ctx, d.cancel = context.WithCancel(ctx)
	ctx = d.ctx
	d.downSince = d.b.m.now()
	go func() {
		defer close(d.done)
		err := egress.Supervise(ctx, d.attempt, d.b.m.backoff, d.onRetry)
		if err != nil {
			d.send(ctx, report{d: d, kind: reportFailed, err: err})
		}
	}()
}

// stop ends the worker; the caller waits on done.
func (d *destination) stop() { d.cancel() }

func (d *destination) send(ctx context.Context, r report) {
	select {
	case d.b.reports <- r:
	case <-ctx.Done():
	}
}

// attempt is one connection: publish, then feed it until it drops or ctx ends.
func (d *destination) attempt(ctx context.Context) error {
	maxRetry := d.b.m.cfg.MaxRetryDuration
	if d.lastErr != nil && d.b.m.now().Sub(d.downSince) > maxRetry {
		return egress.Permanent(fmt.Errorf("%w: no connection for %s: %w", errRetriesExhausted, maxRetry, d.lastErr))
	}
	conn, err := d.b.m.publish(ctx, d.target)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		d.lastErr = err
		if refused(err) {
			return egress.Permanent(err)
		}
		return err
	}
	d.conn.Store(conn)
	flowing := make(chan struct{})
	d.mu.Lock()
	d.m.setConn(conn, flowing)
	d.mu.Unlock()
	if v := d.videoTrack(); v != nil {
		v.RequestKeyframe()
	}
	d.log.Info("broadcast destination connected: waiting for media")
	for {
		select {
		case <-flowing:
			// The platform took the publish and media flows: the destination is active.
			flowing = nil
			d.downSince, d.lastErr = time.Time{}, nil
			d.log.Info("broadcast destination publishing")
			d.send(ctx, report{d: d, kind: reportActive})
			continue
		case <-ctx.Done():
			d.mu.Lock()
			d.m.end()
			d.m.setConn(nil, nil)
			d.mu.Unlock()
			_ = conn.Close()
			d.retire(conn)
			return nil
		case <-conn.Done():
			err := conn.Err()
			d.mu.Lock()
			d.m.setConn(nil, nil)
			d.mu.Unlock()
			_ = conn.Close()
			d.retire(conn)
			if d.lastErr == nil {
				d.downSince = d.b.m.now()
			}
			d.lastErr = err
			return fmt.Errorf("connection lost: %w", err)
		}
	}
}

// retire moves an ended connection's byte count into the total.
func (d *destination) retire(c *rtmp.Conn) {
	d.sentDone.Add(c.BytesSent())
	d.conn.CompareAndSwap(c, nil)
}

// bytesSent is what every connection of the destination sent.
func (d *destination) bytesSent() int64 {
	n := d.sentDone.Load()
	if c := d.conn.Load(); c != nil {
		n += c.BytesSent()
	}
	return n
}

func (d *destination) onRetry(r egress.Retry) {
	d.log.Warn("broadcast destination reconnecting", "attempt", r.Attempt, "after", r.Delay.Round(time.Millisecond), "err", d.target.Scrub(r.Err.Error()))
	d.send(d.ctx, report{d: d, kind: reportReconnecting, attempt: r.Attempt, err: r.Err})
}

func (d *destination) videoTrack() *sfu.Track {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m.bind == nil {
		return nil
	}
	return d.m.bind.video
}

// bind switches the destination to the tracks of nb (nil: no source). Called from the
// broadcast's goroutine; it waits for the old subscriptions to end.
func (d *destination) bind(nb *binding) {
	d.mu.Lock()
	vs, as := d.vsub, d.asub
	d.vsub, d.asub = nil, nil
	d.mu.Unlock()
	if vs != nil {
		vs.Close()
	}
	if as != nil {
		as.Close()
	}
	d.mu.Lock()
	d.setBinding(nb)
	d.mu.Unlock()
	if nb == nil {
		return
	}
	var vsub, asub *sfu.Subscription
	if nb.video != nil {
		vsub, _ = nb.video.Subscribe(sfu.SinkFunc(d.videoSink), sfu.SubscribeOptions{})
	}
	if nb.audio != nil {
		asub, _ = nb.audio.Subscribe(sfu.SinkFunc(d.audioSink), sfu.SubscribeOptions{})
	}
	d.mu.Lock()
	d.vsub, d.asub = vsub, asub
	d.mu.Unlock()
}

// setBinding switches the mux and the frame readers to nb's tracks; d.mu held.
func (d *destination) setBinding(nb *binding) {
	d.m.setBinding(nb)
	d.vr, d.ar = nil, nil
	d.vseq, d.aseq = media.Sequence{}, media.Sequence{}
	if nb == nil {
		return
	}
	// bindTracks took only codecs these readers take: the errors cannot happen.
	if nb.video != nil {
		d.vr, _ = media.NewReader(nb.video.Codec())
	}
	if nb.audio != nil {
		d.ar, _ = media.NewReader(nb.audio.Codec())
	}
}

// videoSink takes the video track's packets (the subscription's goroutine). After a loss the
// reader waits for the next keyframe, which is asked for at once.
func (d *destination) videoSink(p *sfu.Packet, gap bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.vr == nil {
		return nil
	}
	ext, skipped := d.vseq.Next(&p.Header)
	lost := gap || skipped
	d.arrival = p.Arrival
	if !d.vr.Push(p, ext, lost, d.emitV) || lost {
		d.m.bind.video.RequestKeyframe()
	}
	return nil
}

func (d *destination) writeVideo(f *media.Frame) {
	var sps, pps []byte
	if f.Key { // the reader learns parameter sets from keyframes only
		params, _ := d.vr.Params()
		sps, pps = params.SPS, params.PPS
	}
	want, _ := d.m.video(f, d.arrival, sps, pps) // a failed write ends the connection: the worker sees it
	if want && d.m.bind != nil && d.m.bind.video != nil {
		d.m.bind.video.RequestKeyframe()
	}
}

// audioSink takes the audio track's packets (the subscription's goroutine).
func (d *destination) audioSink(p *sfu.Packet, gap bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ar == nil {
		return nil
	}
	ext, skipped := d.aseq.Next(&p.Header)
	d.arrival = p.Arrival
	d.ar.Push(p, ext, gap || skipped, d.emitA) // a malformed packet is skipped
	return nil
}

func (d *destination) writeAudio(f *media.Frame) {
	_ = d.m.audio(f, d.arrival)
}

// refused reports whether err is the destination refusing us, which retrying cannot fix: an
// RTMP _error or error status (bad key), a close before the publish was accepted (nginx
// on_publish, YouTube, Twitch), an unknown host, a certificate that does not verify.
func refused(err error) bool {
	var se *rtmp.StatusError
	var dns *net.DNSError
	switch {
	case errors.As(err, &se), errors.Is(err, rtmp.ErrRefusedByClose), errors.Is(err, rtmp.ErrInvalidURL):
		return true
	case errors.As(err, &dns) && dns.IsNotFound:
		return true
	}
	return rtmp.CertificateError(err)
}

// errorCode names an error for the error object of events and the API.
func errorCode(err error) string {
	var se *rtmp.StatusError
	switch {
	case errors.Is(err, sfu.ErrNoTranscoder):
		return "no_transcoder"
	case errors.Is(err, errUnsupportedCodec):
		return "unsupported_codec"
	case errors.Is(err, errRetriesExhausted):
		return "retries_exhausted"
	case errors.As(err, &se), errors.Is(err, rtmp.ErrRefusedByClose):
		return "destination_refused"
	case refused(err):
		return "destination_unreachable"
	}
	return "connection_lost"
}
