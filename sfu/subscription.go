package sfu

import (
	"sync"
	"sync/atomic"
	"time"
)

// Sink consumes the packets of one track. Its methods are called serially from the
// subscription's goroutine, so a muxer behind it needs no lock.
type Sink interface {
	// WritePacket delivers one packet, which the sink must not modify. gap reports that the SFU
	// skipped packets since the previous call (overflow, or the start after a source switch),
	// so that a rewriter closes the sequence gap instead of presenting it as loss. A non-nil
	// error ends the subscription with that error.
	WritePacket(p *Packet, gap bool) error
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(p *Packet, gap bool) error

// WritePacket calls f.
func (f SinkFunc) WritePacket(p *Packet, gap bool) error { return f(p, gap) }

// SubscribeOptions tune a subscription.
type SubscribeOptions struct {
	// QueueSize is the bound of the per-subscriber queue in packets (default 1024 for video,
	// 256 for audio).
	QueueSize int
}

// Subscription is one sink attached to one track, with its bounded queue and its goroutine.
// The owner that created it calls Close, which waits for the goroutine; the subscription also
// ends by itself when the track ends (Err is then ErrTrackClosed) or the sink fails.
type Subscription struct {
	track *Track
	sink  Sink
	q     *queue
	wake  chan struct{}
	stop  chan struct{}
	done  chan struct{}

	stopOnce sync.Once
	errMu    sync.Mutex
	err      error

	// subscriber is the participant owning the subscription (nil for egress workers);
	// unsubscribed is set once its track.unsubscribed event is emitted.
	subscriber   *Participant
	unsubscribed bool // guarded by the room's op lock

	// Producer-owned state.
	primed     bool
	skipping   bool
	pendingGap bool
	askedAt    int64 // arrival (unix ns) of the packet at which a keyframe was last asked for

	// Counters: dropped is written by the producer, the rest by the subscription goroutine.
	dropped   atomic.Uint64
	delivered atomic.Uint64
	bytesOut  atomic.Uint64
	framesOut atomic.Uint64

	rate     rateMeter // owned by the hub's ticker
	shedSeen uint64    // drops already seen by the hub's overload check (its goroutine only)

	// since is when the subscription was made (unix nanoseconds): packets that arrived before
	// (the GOP cache's) are old by design. lag is the longest a packet that arrived after it
	// waited in the queue (measured on some packets: see lagEvery) since the hub's overload
	// check last took it.
	since int64
	lag   atomic.Int64
}

func newSubscription(t *Track, sink Sink, opts SubscribeOptions) *Subscription {
	size := opts.QueueSize
	if size <= 0 {
		size = 256
		if t.kind == KindVideo {
			size = 1024
		}
	}
	return &Subscription{
		track: t,
		sink:  sink,
		q:     newQueue(size),
		wake:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
		since: t.hub.clock().UnixNano(),
	}
}

// Track returns the subscribed track.
func (s *Subscription) Track() *Track { return s.track }

// Done is closed when the subscription's goroutine has ended.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err returns why the subscription ended: nil after Close, ErrTrackClosed when the track
// ended, or the sink's error. Valid after Done is closed.
func (s *Subscription) Err() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

// Dropped returns how many packets were dropped because the queue was full.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Delivered returns how many packets the sink has accepted.
func (s *Subscription) Delivered() uint64 { return s.delivered.Load() }

// RequestKeyframe asks the track's publisher for a keyframe (throttled), e.g. on a viewer's
// PLI. Safe for concurrent use.
func (s *Subscription) RequestKeyframe() { s.track.RequestKeyframe() }

// Close detaches the subscription and waits for its goroutine. Idempotent; safe from any
// goroutine except the sink's own callbacks.
func (s *Subscription) Close() {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
	s.track.detach(s)
}

func (s *Subscription) start() {
	go s.run()
}

// offer queues p for the subscriber; called by the track's producer only.
func (s *Subscription) offer(p *Packet) {
	t := s.track
	if !s.primed {
		s.primed = true
		if t.kind == KindVideo {
			if t.spec.CacheGOP && t.gopValid && len(t.gop) <= s.q.free() {
				// p is the cache's last packet: deliver the whole GOP, the subscriber starts at
				// its keyframe at once.
				for _, gp := range t.gop {
					s.q.push(entry{p: gp})
				}
				s.signal()
				return
			}
			s.skipping, s.askedAt = true, p.Arrival // Subscribe asked for the keyframe
		}
	}
	if s.skipping {
		if !p.Keyframe {
			if p.Arrival-s.askedAt >= int64(keyframeRetry) {
				s.askedAt = p.Arrival
				t.RequestKeyframe()
			}
			return
		}
		s.skipping = false
	}
	if !s.q.push(entry{p: p, gap: s.pendingGap}) {
		s.dropped.Add(1)
		s.pendingGap = true
		if t.kind == KindVideo {
			s.skipping, s.askedAt = true, p.Arrival
			t.RequestKeyframe()
		}
		return
	}
	s.pendingGap = false
	s.signal()
}

// keyframeRetry is how often a video subscription waiting for a keyframe asks again. A
// request can be lost with its RTCP packet, or dropped by the publisher: libwebrtc ignores
// requests that come within 300 ms of the previous one, and the track then has no waiting
// subscriber left to remember.
const keyframeRetry = time.Second

func (s *Subscription) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Subscription) run() {
	defer close(s.done)
	defer s.track.hub.retireSubscription(s)
	defer s.track.detach(s)
	var lastLog time.Time
	var loggedDrops uint64
	for {
		if err := s.drain(); err != nil {
			s.setErr(err)
			return
		}
		if d := s.dropped.Load(); d != loggedDrops {
			if now := time.Now(); now.Sub(lastLog) >= time.Second {
				s.track.hub.log.Debug("subscriber dropped packets",
					"track", s.track.sid, "dropped_total", d, "dropped_new", d-loggedDrops)
				lastLog, loggedDrops = now, d
			}
		}
		select {
		case <-s.wake:
		case <-s.stop:
			return
		case <-s.track.done:
			if err := s.drain(); err != nil {
				s.setErr(err)
				return
			}
			s.setErr(ErrTrackClosed)
			return
		}
	}
}

func (s *Subscription) drain() error {
	for n := 0; ; n++ {
		select {
		case <-s.stop:
			return nil
		default:
		}
		e, ok := s.q.pop()
		if !ok {
			return nil
		}
		if n%lagEvery == 0 {
			s.noteLag(e.p)
		}
		if err := s.sink.WritePacket(e.p, e.gap); err != nil {
			return err
		}
		s.delivered.Add(1)
		s.bytesOut.Add(uint64(len(e.p.Payload) + rtpHeaderSize))
		if e.p.Header.Marker && s.track.kind == KindVideo {
			s.framesOut.Add(1)
		}
	}
}

// lagEvery is how often drain measures the lag: on the first packet of a wake-up (the oldest
// queued), then every 32nd (a slow sink keeps it draining).
const lagEvery = 32

// noteLag keeps how long p waited, if it is the longest since the hub last took it.
func (s *Subscription) noteLag(p *Packet) {
	if a := p.Arrival; a > s.since {
		if lag := s.track.hub.clock().UnixNano() - a; lag > s.lag.Load() {
			s.lag.Store(lag)
		}
	}
}

func (s *Subscription) setErr(err error) {
	s.errMu.Lock()
	s.err = err
	s.errMu.Unlock()
}
