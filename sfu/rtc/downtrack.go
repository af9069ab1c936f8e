package rtc

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
)

// errNoCodec is returned by Bind when the viewer negotiated nothing that can carry the source.
var errNoCodec = errors.New("the viewer's offer has no codec for this track")

// DownTrack sends one sfu track to one viewer: a pion TrackLocal that is also the subscription's
// Sink. It rewrites SSRC and payload type to the negotiated ones, and sequence numbers and
// timestamps so that they run on without jumps across SFU drops and source switches (RFC 3550
// §5.1 lets a sender start anywhere, never go back).
//
// WritePacket is called serially by the subscription goroutine; Bind/Unbind by pion; Switch by
// the session between two subscriptions (never concurrently with WritePacket).
type DownTrack struct {
	id, streamID string
	kind         webrtc.RTPCodecType
	codec        sfu.Codec

	// binding is the negotiated output, set by Bind and cleared by Unbind; read per packet
	// without a lock.
	binding atomic.Pointer[binding]

	// Owned by the writing goroutine.
	hdr   rtp.Header // reused: WriteRTP takes a pointer, a fresh header would escape
	m     sfu.Munger
	layer uint8 // the simulcast layer of the last packet: a change re-anchors the munger

	sent atomic.Uint64

	// history keeps the last sent packets for retransmission: the shared packet and the
	// sequence number and timestamp it went out with. Written by WritePacket, read by Resend.
	history [historySize]sentPacket
	// resendHdr is Resend's own header scratch (it runs on the RTCP goroutine).
	resendHdr rtp.Header
	resent    atomic.Uint64

	// route, when set, sends below pion (egress.go); nil sends through pion's writer. It is
	// set before the first subscription: a routed track sends every packet that way.
	route atomic.Pointer[directRoute]

	// wmu serializes the writes of WritePacket and Resend (one SRTP context, one scratch)
	// and guards the sender report state.
	wmu     sync.Mutex
	plain   []byte     // a marshaled packet before encryption
	cipher  []byte     // its encryption
	encHdr  rtp.Header // EncryptRTP's header scratch
	srPkts  uint32     // packets and payload octets sent, for sender reports
	srBytes uint32
	srTS    uint32 // the latest RTP timestamp sent, and when its packet reached us
	srAt    int64
	srHave  bool
}

// historySize is the retransmission window in packets (about 3 s of 2.6 Mbit/s video).
const historySize = 1024

// sentPacket is one history slot. meta holds seq<<32 | timestamp and is stored after p, so a
// reader that sees the same meta before and after loading p has a consistent pair.
// resends counts its retransmissions (reset when the slot takes another packet).
type sentPacket struct {
	p       atomic.Pointer[sfu.Packet]
	meta    atomic.Uint64
	resends atomic.Uint32
}

// maxResends is how many times one packet is retransmitted to a viewer at most: a viewer that
// keeps asking (pion asks every 100 ms until the packet arrives or leaves its window) does not
// make the daemon send it over and over when it is lost for good (as livekit's sequencer does).
const maxResends = 3

type binding struct {
	writer webrtc.TrackLocalWriter
	ssrc   uint32
	pt     uint8
}

// NewDownTrack returns a down track carrying codec.
func NewDownTrack(codec sfu.Codec, id, streamID string) *DownTrack {
	kind := webrtc.RTPCodecTypeAudio
	if codec.Kind() == sfu.KindVideo {
		kind = webrtc.RTPCodecTypeVideo
	}
	return &DownTrack{id: id, streamID: streamID, kind: kind, codec: codec, m: sfu.Munger{ClockRate: codec.ClockRate}}
}

// ID implements webrtc.TrackLocal.
func (d *DownTrack) ID() string { return d.id }

// RID implements webrtc.TrackLocal.
func (d *DownTrack) RID() string { return "" }

// StreamID implements webrtc.TrackLocal.
func (d *DownTrack) StreamID() string { return d.streamID }

// Kind implements webrtc.TrackLocal.
func (d *DownTrack) Kind() webrtc.RTPCodecType { return d.kind }

// Codec returns the source codec the track was made for.
func (d *DownTrack) Codec() sfu.Codec { return d.codec }

// Bind implements webrtc.TrackLocal: it picks the negotiated codec that carries the source.
func (d *DownTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	c, ok := matchCodec(d.codec, ctx.CodecParameters())
	if !ok {
		return webrtc.RTPCodecParameters{}, errNoCodec
	}
	d.binding.Store(&binding{writer: ctx.WriteStream(), ssrc: uint32(ctx.SSRC()), pt: uint8(c.PayloadType)})
	return c, nil
}

// Unbind implements webrtc.TrackLocal.
func (d *DownTrack) Unbind(webrtc.TrackLocalContext) error {
	d.binding.Store(nil)
	return nil
}

// Switch announces that the next packet comes from another source track: sequence numbers
// and timestamps are re-anchored to continue from the last ones sent.
func (d *DownTrack) Switch() { d.m.Switch() }

// Sent returns the number of packets written.
func (d *DownTrack) Sent() uint64 { return d.sent.Load() }

// WritePacket implements sfu.Sink.
func (d *DownTrack) WritePacket(p *sfu.Packet, gap bool) error {
	b := d.binding.Load()
	if b == nil {
		return nil // not negotiated yet or being torn down; the subscription keeps running
	}
	if p.Layer != d.layer {
		d.layer = p.Layer
		d.m.Switch() // each layer has its own numbering and clock
	}
	h := &d.hdr
	*h = p.Header
	if !d.m.Rewrite(h, gap, time.Unix(0, p.Arrival)) {
		return nil // a late packet from before the current mapping: it would reuse a number
	}
	h.SSRC = b.ssrc
	h.PayloadType = b.pt
	h.Extension, h.Extensions, h.ExtensionProfile = false, nil, 0
	h.Padding, h.PaddingSize = false, 0
	if err := d.write(b, h, p.Payload, p.Arrival); err != nil {
		return err
	}
	slot := &d.history[h.SequenceNumber%historySize]
	slot.meta.Store(0)
	slot.resends.Store(0)
	slot.p.Store(p)
	slot.meta.Store(uint64(h.SequenceNumber)<<32 | uint64(h.Timestamp) | 1<<48)
	d.sent.Add(1)
	return nil
}

// Resend retransmits the packets a viewer reported lost (RTCP generic NACK, RFC 4585 §6.2.1)
// that are still in the history, each at most maxResends times. Safe to call from the RTCP
// goroutine.
func (d *DownTrack) Resend(seqs []uint16) {
	b := d.binding.Load()
	if b == nil {
		return
	}
	for _, seq := range seqs {
		slot := &d.history[seq%historySize]
		m1 := slot.meta.Load()
		p := slot.p.Load()
		if m1 == 0 || p == nil || slot.meta.Load() != m1 || uint16(m1>>32) != seq {
			continue // overwritten or never sent
		}
		if slot.resends.Add(1) > maxResends {
			continue
		}
		h := &d.resendHdr
		*h = p.Header
		h.SSRC, h.PayloadType = b.ssrc, b.pt
		h.SequenceNumber, h.Timestamp = seq, uint32(m1)
		h.Extension, h.Extensions, h.ExtensionProfile = false, nil, 0
		h.Padding, h.PaddingSize = false, 0
		if err := d.write(b, h, p.Payload, 0); err != nil {
			return
		}
		d.resent.Add(1)
	}
}

// write sends one packet, on the direct route when there is one, and counts it for sender
// reports; arrival (0 for a retransmission) is when the packet reached the SFU.
func (d *DownTrack) write(b *binding, h *rtp.Header, payload []byte, arrival int64) error {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if r := d.route.Load(); r != nil {
		if err := d.writeDirect(r, h, payload); err != nil {
			return err
		}
	} else if _, err := b.writer.WriteRTP(h, payload); err != nil {
		return err
	}
	d.srPkts++
	d.srBytes += uint32(len(payload)) //nolint:gosec // wraps, as RFC 3550 §6.4.1 allows
	if arrival != 0 && (!d.srHave || int32(h.Timestamp-d.srTS) >= 0) {
		d.srTS, d.srAt, d.srHave = h.Timestamp, arrival, true
	}
	return nil
}

// writeDirect encrypts the packet with the track's SRTP context and queues it on the socket.
func (d *DownTrack) writeDirect(r *directRoute, h *rtp.Header, payload []byte) error {
	hl := h.MarshalSize()
	n := hl + len(payload)
	if cap(d.plain) < n {
		d.plain = make([]byte, 0, max(n, 1500))
	}
	buf := d.plain[:n]
	if _, err := h.MarshalTo(buf); err != nil {
		return err
	}
	copy(buf[hl:], payload)
	if cap(d.cipher) < n+srtpOverhead {
		d.cipher = make([]byte, 0, max(n+srtpOverhead, 1500+srtpOverhead))
	}
	out, err := r.srtp.EncryptRTP(d.cipher[:0], buf, &d.encHdr)
	if err != nil {
		return err
	}
	_, err = r.conn.WriteToAddrPort(out, r.addr)
	return err
}

// srtpOverhead is the most SRTP adds to a packet (a 16-byte GCM tag; HMAC-SHA1-80 adds 10).
const srtpOverhead = 16

// setRoute switches the track to a direct route (egress.go).
func (d *DownTrack) setRoute(r *directRoute) { d.route.Store(r) }

// senderReport returns the track's RTCP sender report for now: the RTP time extrapolated from
// the latest timestamp sent and when its packet arrived, so that audio and video share the
// arrival clock (RFC 3550 §6.4.1).
func (d *DownTrack) senderReport(now time.Time) (*rtcp.SenderReport, bool) {
	b := d.binding.Load()
	if b == nil {
		return nil, false
	}
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if !d.srHave {
		return nil, false
	}
	elapsed := now.Sub(time.Unix(0, d.srAt))
	rtpTime := d.srTS + uint32(int64(elapsed.Seconds()*float64(d.codec.ClockRate))) //nolint:gosec // RTP time wraps
	return &rtcp.SenderReport{SSRC: b.ssrc, NTPTime: sfu.ToNTP(now), RTPTime: rtpTime, PacketCount: d.srPkts, OctetCount: d.srBytes}, true
}

// observeReports keeps the viewer's report blocks about this track in f (stream.stats).
func (d *DownTrack) observeReports(f *sfu.ReportStats, reports []rtcp.ReceptionReport) {
	b := d.binding.Load()
	if b == nil {
		return
	}
	f.SetClock(b.ssrc, d.codec.ClockRate)
	now := time.Now()
	for _, r := range reports {
		if r.SSRC == b.ssrc {
			f.ObservePeer(r, now)
		}
	}
}

// Resent returns the number of retransmitted packets.
func (d *DownTrack) Resent() uint64 { return d.resent.Load() }

// matchCodec picks the negotiated codec that can carry src: the same MIME type, and for H.264
// the same packetization mode, preferring the same profile.
func matchCodec(src sfu.Codec, negotiated []webrtc.RTPCodecParameters) (webrtc.RTPCodecParameters, bool) {
	mime := src.MimeType()
	var best webrtc.RTPCodecParameters
	score := -1
	for _, c := range negotiated {
		if !strings.EqualFold(c.MimeType, mime) || (src.ClockRate != 0 && c.ClockRate != src.ClockRate) {
			continue
		}
		s := 1
		if src.Name == sfu.CodecH264 {
			if media.FmtpValue(c.SDPFmtpLine, "packetization-mode") != h264PacketizationMode(src.Fmtp) {
				continue
			}
			want := strings.ToLower(media.FmtpValue(src.Fmtp, "profile-level-id"))
			got := strings.ToLower(media.FmtpValue(c.SDPFmtpLine, "profile-level-id"))
			if len(want) >= 4 && len(got) >= 4 {
				switch {
				case want[:4] == got[:4]:
					s = 3
				case want[:2] == got[:2]:
					s = 2
				}
			}
		}
		if s > score {
			best, score = c, s
		}
	}
	return best, score >= 0
}

func h264PacketizationMode(fmtp string) string {
	if m := media.FmtpValue(fmtp, "packetization-mode"); m != "" {
		return m
	}
	return "1" // what every source of ours packetizes with (FU-A, STAP-A)
}

// CanCarry reports whether a viewer that negotiated codecs can receive src.
func CanCarry(src sfu.Codec, negotiated []webrtc.RTPCodecParameters) bool {
	_, ok := matchCodec(src, negotiated)
	return ok
}
