package sfu

import (
	"math"
	"sync"
	"time"

	"github.com/pion/rtcp"
)

// ReportStats gathers the stream.stats figures of one connection from RTCP reception report
// blocks (RFC 3550 §6.4): the ones the server sends about the media it receives (a publisher's)
// and the ones the peer sends about the media it receives from the server (a player's). It is
// updated once per report, never per packet. Safe for concurrent use.
type ReportStats struct {
	mu     sync.Mutex
	clock  map[uint32]uint32 // SSRC → clock rate of the streams received and sent
	blocks map[uint32]reportBlock
	rttMs  float64 // from the last block that answered one of our sender reports
	hasRTT bool
	// firstSeq is the extended highest sequence number of each SSRC's first block: the base
	// of the packets expected (connection quality).
	firstSeq   map[uint32]uint32
	reportedAt time.Time // when the latest block came
}

// reportBlock is the latest report block about one SSRC.
type reportBlock struct {
	lost     int64
	jitterMs float64
	expected int64 // packets expected since the first block (RFC 3550 §6.4.1)
}

// NewReportStats returns an empty set of figures.
func NewReportStats() *ReportStats {
	return &ReportStats{clock: map[uint32]uint32{}, blocks: map[uint32]reportBlock{}, firstSeq: map[uint32]uint32{}}
}

// SetClock records the clock rate of a stream, which turns its jitter into time; blocks about
// a stream of unknown rate are ignored.
func (f *ReportStats) SetClock(ssrc, rate uint32) {
	f.mu.Lock()
	f.clock[ssrc] = rate
	f.mu.Unlock()
}

// ObserveOwn keeps a block of a report the server sends about a stream it receives.
func (f *ReportStats) ObserveOwn(r rtcp.ReceptionReport) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if rate := f.clock[r.SSRC]; rate > 0 {
		f.keep(r, rate, time.Now())
	}
}

// ObservePeer keeps a block of a report the peer sends, received at now, about a stream the
// server sends, and the round trip it measures when it answers one of the server's sender
// reports (RFC 3550 §6.4.1: arrival − LSR − DLSR).
func (f *ReportStats) ObservePeer(r rtcp.ReceptionReport, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rate := f.clock[r.SSRC]
	if rate == 0 {
		return // not a stream of ours
	}
	f.keep(r, rate, now)
	if r.LastSenderReport == 0 {
		return
	}
	rtt := uint32(ToNTP(now)>>16) - r.LastSenderReport - r.Delay // 1/65536 s; wraps when negative
	if rtt < 1<<31 {
		f.rttMs, f.hasRTT = float64(rtt)*1000/65536, true
	}
}

// keep records r, a block about a stream of clock rate, received at now; f.mu is held.
func (f *ReportStats) keep(r rtcp.ReceptionReport, rate uint32, now time.Time) {
	first, ok := f.firstSeq[r.SSRC]
	if !ok {
		first = r.LastSequenceNumber
		f.firstSeq[r.SSRC] = first
	}
	f.blocks[r.SSRC] = reportBlock{lost: int64(r.TotalLost), jitterMs: float64(r.Jitter) * 1000 / float64(rate),
		expected: int64(r.LastSequenceNumber - first)}
	f.reportedAt = now
}

// Stats returns the figures: packets lost summed over the streams, the highest jitter, and the
// round trip when a peer's report measured one.
func (f *ReportStats) Stats() ProtocolStats {
	var ps ProtocolStats
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.blocks) > 0 {
		var lost, expected int64
		var jitter float64
		for _, b := range f.blocks {
			lost += b.lost
			expected += b.expected
			jitter = max(jitter, b.jitterMs)
		}
		jitter = RoundMs(jitter)
		ps.PacketsLost, ps.JitterMs, ps.PacketsExpected = &lost, &jitter, &expected
		ps.ReportedAt = f.reportedAt
	}
	if f.hasRTT {
		rtt := RoundMs(f.rttMs)
		ps.RTTMs = &rtt
	}
	return ps
}

// RoundMs rounds a figure in milliseconds to the microsecond: a loopback round trip is a
// fraction of a millisecond.
func RoundMs(ms float64) float64 { return math.Round(ms*1000) / 1000 }
