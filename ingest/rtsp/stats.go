package rtsp

import (
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/pion/rtcp"

	"github.com/sluice-media/sluice/sfu"
)

// receivedStats returns the stream.stats figures of a session gortsplib receives: the packets
// lost as counted, the bytes received and the highest jitter of its formats (RFC 3550 §A.8,
// which gortsplib keeps in RTP time: divided here by the format's clock rate).
func receivedStats(st *gortsplib.StatsSession, lost uint64) sfu.ProtocolStats {
	n, bytes := int64(lost), int64(st.BytesReceived) //nolint:gosec // counters stay below 2^63
	var jitter float64
	for _, m := range st.Medias {
		for f, fs := range m.Formats {
			if rate := f.ClockRate(); rate > 0 {
				jitter = max(jitter, fs.RTPPacketsJitter*1000/float64(rate))
			}
		}
	}
	jitter = sfu.RoundMs(jitter)
	return sfu.ProtocolStats{PacketsLost: &n, JitterMs: &jitter, Bytes: &bytes}
}

// observeReports keeps a player's receiver reports about the slot's media (loss, jitter, and
// the round trip to gortsplib's sender reports). Called on the session's RTCP path, once per
// report.
func (sl *playSlot) observeReports(p rtcp.Packet) {
	rr, ok := p.(*rtcp.ReceiverReport)
	if !ok {
		return
	}
	now := time.Now()
	for _, b := range rr.Reports {
		sl.pl.reports.SetClock(b.SSRC, sl.codec.ClockRate)
		sl.pl.reports.ObservePeer(b, now)
	}
}

// stats returns the player's stream.stats figures: the bytes sent and what its receiver
// reports say.
func (pl *player) stats() sfu.ProtocolStats {
	ps := pl.reports.Stats()
	bytes := int64(pl.ss.Stats().BytesSent) //nolint:gosec // counters stay below 2^63
	ps.Bytes = &bytes
	return ps
}
