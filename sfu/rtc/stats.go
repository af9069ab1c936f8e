package rtc

import (
	"strings"
	"sync"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu"
)

// iceRTT adds to ps the round trip of pc's ICE consent checks (RFC 7675: a STUN request every
// 2 s on the selected pair, whichever side sends the media) when RTCP measured none. It reads
// them from GetStats: ICETransport.GetSelectedCandidatePairStats races with an ICE restart
// (pion v4.2.23 reads the transport's gatherer without its lock), and the hub asks every
// second (connection quality).
func iceRTT(ps sfu.ProtocolStats, pc *webrtc.PeerConnection) sfu.ProtocolStats {
	if ps.RTTMs != nil {
		return ps
	}
	for _, s := range pc.GetStats() {
		if cp, ok := s.(webrtc.ICECandidatePairStats); ok && cp.Nominated && cp.CurrentRoundTripTime > 0 {
			rtt := sfu.RoundMs(cp.CurrentRoundTripTime * 1000)
			ps.RTTMs = &rtt
			break
		}
	}
	return ps
}

// reportTaps hands each peer connection of the publishers' API an interceptor that reads the
// receiver reports pion's report interceptor sends (registered before it, so that its writer
// is the one those reports go through). Connections find theirs by id.
type reportTaps struct{ byPC sync.Map } // pc id → *sfu.ReportStats

// NewInterceptor implements interceptor.Factory; Build calls it with the connection's id.
func (t *reportTaps) NewInterceptor(id string) (interceptor.Interceptor, error) {
	f := sfu.NewReportStats()
	t.byPC.Store(id, f)
	return &reportTap{taps: t, id: id, f: f}, nil
}

// of returns the figures of pc (an empty set for a connection of another API).
func (t *reportTaps) of(pc *webrtc.PeerConnection) *sfu.ReportStats {
	if f, ok := t.byPC.Load(pc.ID()); ok {
		return f.(*sfu.ReportStats)
	}
	return sfu.NewReportStats()
}

// reportTap is one connection's interceptor: it notes the clock rate of each stream, the report
// blocks of the receiver reports written and those of the reports read about the streams sent;
// packets pass untouched.
type reportTap struct {
	interceptor.NoOp
	taps *reportTaps
	id   string
	f    *sfu.ReportStats
}

// BindRemoteStream implements interceptor.Interceptor (once per received stream). Repair
// streams (RTX, FEC) are left out: their timestamps are the repaired packets', and a sender's
// padding probes on RTX make a meaningless jitter.
func (r *reportTap) BindRemoteStream(info *interceptor.StreamInfo, reader interceptor.RTPReader) interceptor.RTPReader {
	if !isRepair(info.MimeType) {
		r.f.SetClock(info.SSRC, info.ClockRate)
	}
	return reader
}

// isRepair reports whether mime is a retransmission or forward error correction format.
func isRepair(mime string) bool {
	m := strings.ToLower(mime)
	return strings.HasSuffix(m, "/rtx") || strings.HasSuffix(m, "fec")
}

// BindLocalStream implements interceptor.Interceptor (once per sent stream).
func (r *reportTap) BindLocalStream(info *interceptor.StreamInfo, writer interceptor.RTPWriter) interceptor.RTPWriter {
	if !isRepair(info.MimeType) {
		r.f.SetClock(info.SSRC, info.ClockRate)
	}
	return writer
}

// BindRTCPReader implements interceptor.Interceptor: reports arrive about once a second.
func (r *reportTap) BindRTCPReader(reader interceptor.RTCPReader) interceptor.RTCPReader {
	return interceptor.RTCPReaderFunc(func(b []byte, attrs interceptor.Attributes) (int, interceptor.Attributes, error) {
		n, attrs, err := reader.Read(b, attrs)
		if err != nil {
			return n, attrs, err
		}
		if attrs == nil {
			attrs = interceptor.Attributes{}
		}
		pkts, perr := attrs.GetRTCPPackets(b[:n]) // parsed once for every reader after us
		if perr != nil {
			return n, attrs, nil
		}
		now := time.Now()
		for _, p := range pkts {
			var reports []rtcp.ReceptionReport
			switch p := p.(type) {
			case *rtcp.ReceiverReport:
				reports = p.Reports
			case *rtcp.SenderReport:
				reports = p.Reports
			}
			for _, rep := range reports {
				r.f.ObservePeer(rep, now)
			}
		}
		return n, attrs, nil
	})
}

// BindRTCPWriter implements interceptor.Interceptor.
func (r *reportTap) BindRTCPWriter(w interceptor.RTCPWriter) interceptor.RTCPWriter {
	return interceptor.RTCPWriterFunc(func(pkts []rtcp.Packet, attrs interceptor.Attributes) (int, error) {
		for _, p := range pkts {
			if rr, ok := p.(*rtcp.ReceiverReport); ok {
				for _, b := range rr.Reports {
					r.f.ObserveOwn(b)
				}
			}
		}
		return w.Write(pkts, attrs)
	})
}

// Close implements interceptor.Interceptor: the connection is closing.
func (r *reportTap) Close() error {
	r.taps.byPC.Delete(r.id)
	return nil
}

// Stats returns the stream.stats figures of pc, a connection made by NewPeerConnection: loss
// and jitter from the receiver reports about what pc receives (ours) and sends (the peer's),
// the round trip from the peer's reports, else from ICE. Safe to call from any goroutine.
func (e *Engine) Stats(pc *webrtc.PeerConnection) func() sfu.ProtocolStats {
	f := e.taps.of(pc)
	return func() sfu.ProtocolStats { return iceRTT(f.Stats(), pc) }
}
