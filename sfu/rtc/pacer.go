package rtc

import (
	"math"
	"net/netip"
	"time"
)

// A video frame reaches the send queue for every viewer at once, and a keyframe is tens of
// packets. Sent as they come, each viewer gets its frame in one burst: a receiver that is a
// moment late, or a link with a short queue, overflows and drops the end of it (a stock
// client's default socket buffer holds about 90 packets; the kernel counts the overflow as
// RcvbufErrors). The pacer spreads each viewer's packets over time, as a browser's own sender
// paces: a token bucket per destination filled at a few times the rate the destination is fed
// at, with a small burst, and never slower than what empties its backlog within maxPaceDelay.
// Each flush releases every destination's share, so that viewers are interleaved and each
// one's share still leaves as one segmented datagram.

const (
	// paceFactor is the pace over the destination's average rate: room for a keyframe
	// without letting it leave at once.
	paceFactor = 4
	// paceBurst is how long a destination's bucket fills for: what leaves at once after a
	// pause. At paceFactor times the average that is a typical delta frame, which leaves
	// whole as one segmented datagram; a keyframe's rest is spread. (Smaller bursts cost the
	// segmentation offload and wake the receivers per packet: BenchmarkBatchConnStream.)
	paceBurst = 10 * time.Millisecond
	// maxPaceDelay bounds the time a packet waits for its pace: the rate rises to empty a
	// destination's backlog within it.
	maxPaceDelay = 60 * time.Millisecond
	// minPaceRate is the least pace, in bytes per second (2 Mbit/s), for a destination whose
	// average is still low (a new viewer's first keyframe).
	minPaceRate = 250_000
	// paceWindow is the time constant of a destination's average rate.
	paceWindow = time.Second
	// maxPaced bounds the packets waiting for one destination; beyond it media is dropped.
	maxPaced = 2048
	// paceIdle is how long a destination with nothing waiting is remembered.
	paceIdle = 10 * time.Second
)

// pacedDest is one destination's queue and bucket.
type pacedDest struct {
	addr    netip.AddrPort
	q       []outPacket // waiting: q[head:]
	head    int
	backlog int     // bytes waiting
	fed     int     // bytes queued since avg was brought up to date
	avg     float64 // bytes per second fed, averaged over paceWindow
	tokens  float64 // bytes it may send now
	at      int64   // when avg and tokens were brought up to date (ns)
	active  bool    // in pacer.active
	fresh   bool    // new: its bucket starts full
}

// pacer holds the packets waiting for their destination's pace. It is owned by one goroutine
// (the flusher) and takes the time as an argument, in nanoseconds of a monotonic clock.
type pacer struct {
	dests  map[netip.AddrPort]*pacedDest
	active []*pacedDest // destinations with packets waiting, in the order they got them
	spare  []*pacedDest // forgotten destinations, for reuse
	queued int          // packets waiting, all destinations
	lastGC int64

	// add's cache of the last destination: a subscription queues its packets in runs.
	last *pacedDest
}

// add queues p for its destination; false when that destination's queue is full (p is not
// taken).
func (pc *pacer) add(p outPacket, now int64) bool {
	d := pc.last
	if d == nil || d.addr != p.addr {
		d = pc.dest(p.addr, now)
		pc.last = d
	}
	if len(d.q)-d.head >= maxPaced {
		return false
	}
	if d.head > 0 && d.head == len(d.q) {
		d.q, d.head = d.q[:0], 0
	}
	p.at = now
	d.q = append(d.q, p)
	d.backlog += len(p.buf)
	d.fed += len(p.buf)
	pc.queued++
	if !d.active {
		d.active = true
		pc.active = append(pc.active, d)
	}
	return true
}

// dest returns addr's state, made (full bucket) if it has none.
func (pc *pacer) dest(addr netip.AddrPort, now int64) *pacedDest {
	if d, ok := pc.dests[addr]; ok {
		return d
	}
	if pc.dests == nil {
		pc.dests = map[netip.AddrPort]*pacedDest{}
	}
	var d *pacedDest
	if n := len(pc.spare); n > 0 {
		d, pc.spare = pc.spare[n-1], pc.spare[:n-1]
		*d = pacedDest{q: d.q[:0]}
	} else {
		d = &pacedDest{}
	}
	d.addr, d.at, d.fresh = addr, now, true
	pc.dests[addr] = d
	return d
}

// release appends to out what each destination's pace lets leave by now, each destination's
// packets together and in their order, and returns it.
func (pc *pacer) release(now int64, out []outPacket) []outPacket {
	keep := pc.active[:0]
	for _, d := range pc.active {
		d.refill(now)
		for d.head < len(d.q) && d.tokens > 0 {
			p := d.q[d.head]
			d.q[d.head] = outPacket{}
			d.head++
			d.tokens -= float64(len(p.buf))
			d.backlog -= len(p.buf)
			pc.queued--
			out = append(out, p)
		}
		if d.head < len(d.q) {
			if d.head > len(d.q)/2 { // keep the queue from creeping along its array
				n := copy(d.q, d.q[d.head:])
				clear(d.q[n:])
				d.q, d.head = d.q[:n], 0
			}
			keep = append(keep, d)
			continue
		}
		d.q, d.head, d.active = d.q[:0], 0, false
	}
	clear(pc.active[len(keep):])
	pc.active = keep
	if now-pc.lastGC > int64(paceIdle) {
		pc.gc(now)
	}
	return out
}

// refill brings the destination's average and bucket up to now: the pace is paceFactor times
// the average, or what sends the backlog before its oldest packet has waited maxPaceDelay, at
// least minPaceRate.
func (d *pacedDest) refill(now int64) {
	dt := max(float64(now-d.at)/1e9, 0)
	d.at = now
	w := paceWindow.Seconds()
	d.avg = d.avg*math.Exp(-dt/w) + float64(d.fed)/w
	d.fed = 0
	rate := max(paceFactor*d.avg, minPaceRate)
	if d.head < len(d.q) {
		left := d.q[d.head].at + int64(maxPaceDelay) - now
		if left <= int64(paceTick) {
			d.tokens, d.fresh = float64(d.backlog), false // due: all of it goes now
			return
		}
		rate = max(rate, float64(d.backlog)*1e9/float64(left))
	}
	burst := max(rate*paceBurst.Seconds(), maxPacket)
	if d.fresh {
		d.tokens, d.fresh = burst, false
		return
	}
	d.tokens = min(d.tokens+rate*dt, burst)
}

// maxPacket is the largest packet the bucket must hold (an Ethernet MTU).
const maxPacket = 1500

// gc forgets the destinations that have had nothing to send for paceIdle.
func (pc *pacer) gc(now int64) {
	pc.lastGC = now
	for addr, d := range pc.dests {
		if !d.active && now-d.at > int64(paceIdle) {
			delete(pc.dests, addr)
			if pc.last == d {
				pc.last = nil
			}
			if len(pc.spare) < 256 {
				pc.spare = append(pc.spare, d)
			}
		}
	}
}
