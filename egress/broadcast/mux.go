package broadcast

import (
	"bytes"
	"time"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
	"github.com/sluice-media/sluice/sfu/rtmpproto"
)

// publisher is the connection a mux writes to: *rtmp.Conn, or a stand-in in benchmarks. A tag
// body is given as head then data, so that a frame is not copied to be put behind its header.
type publisher interface {
	WriteVideo(ts uint32, head, data []byte) error
	WriteAudio(ts uint32, head, data []byte) error
	WriteMetadata(props map[string]any) error
}

// clock maps one track's RTP timestamps onto the destination's timeline, in milliseconds since
// the destination's epoch. A track is anchored at the arrival of its first packet; when the
// binding's tracks carry sender reports, the second track is placed against the first by
// their reports instead, so that audio and video line up exactly as their publisher sent them
// whatever the publisher's clock says.
type clock struct {
	set     bool
	rate    int64
	base    int64 // unwrapped RTP time of the anchor
	baseMs  int64
	epochNs int64
}

func (c *clock) reset(rate uint32, epochNs int64) {
	*c = clock{rate: int64(max(rate, 1)), epochNs: epochNs}
}

// srOffset is the shared correction from a publisher's sender-report clock to the
// destination's timeline (ms), set by the first track anchored with a report.
type srOffset struct {
	set bool
	ms  int64
}

// rtp returns the unwrapped RTP time ext relative to the anchor, anchoring on the first call.
func (c *clock) rtp(t *sfu.Track, ext int64, arrival int64, off *srOffset) int64 {
	if !c.set {
		c.set, c.base = true, ext
		c.baseMs = (arrival - c.epochNs) / 1e6
		if t != nil {
			if sr, ok := t.SenderReport(); ok {
				d := int64(int32(uint32(ext) - sr.RTPTime))
				srMs := sr.NTPTime.UnixNano()/1e6 + d*1000/c.rate
				if !off.set {
					off.set, off.ms = true, c.baseMs-srMs
				} else {
					c.baseMs = srMs + off.ms
				}
			}
		}
		return 0
	}
	return ext - c.base
}

// ms converts RTP time relative to the anchor into milliseconds on the timeline.
func (c *clock) ms(rel int64) int64 { return c.baseMs + rel*1000/c.rate }

// mux turns the packets of the bound tracks into FLV tags on the destination's connection:
// sequence headers first (and again after every reconnect and source change), video from a
// keyframe, timestamps monotonic on one timeline. Its methods run on the video and audio
// subscription goroutines and on the destination's worker, serialized by the destination's
// lock, which is also the connection's write lock (a write holds it for at most the
// connection's write timeout).
type mux struct {
	conn     publisher
	gen      uint64 // changes with every connection and every binding
	headers  uint64 // the gen whose sequence headers were sent
	videoOn  uint64 // the gen whose first keyframe was sent
	bind     *binding
	epochNs  int64
	lastV    int64 // last video DTS written (ms), -1 before the first
	lastA    int64
	vclock   clock
	aclock   clock
	sroff    srOffset
	sps, pps []byte // the video reader's latest parameter sets
	sentSPS  []byte
	sentPPS  []byte
	vhead    [5]byte
	ahead    [2]byte
	frames   uint64
	// flowing is closed at the first media tag of the current connection (then nil).
	flowing chan struct{}
}

func newMux(epoch time.Time) *mux {
	return &mux{epochNs: epoch.UnixNano(), lastV: -1, lastA: -1, ahead: rtmpproto.AACFrameHeader()}
}

// setConn starts a new connection (nil: none): sequence headers are due again.
func (m *mux) setConn(c publisher, flowing chan struct{}) {
	m.conn = c
	m.gen++
	m.flowing = flowing
}

// flowed records that media reached the connection.
func (m *mux) flowed() {
	if m.flowing != nil {
		close(m.flowing)
		m.flowing = nil
	}
}

// setBinding switches to new tracks: parameter sets and clocks start over, headers are due.
func (m *mux) setBinding(b *binding) {
	m.bind = b
	m.gen++
	m.sps, m.pps = nil, nil
	m.sroff = srOffset{}
	if b != nil {
		if b.video != nil {
			m.vclock.reset(b.video.Codec().ClockRate, m.epochNs)
		}
		if b.audio != nil {
			m.aclock.reset(b.audio.Codec().ClockRate, m.epochNs)
		}
	}
}

// video writes one access unit; a keyframe comes with the video reader's parameter sets (which
// the mux never modifies), which hold until the next one. It reports whether a keyframe should
// be requested.
func (m *mux) video(f *media.Frame, arrival int64, sps, pps []byte) (wantKeyframe bool, err error) {
	if f.Key {
		m.sps, m.pps = sps, pps
	}
	if m.bind == nil {
		return false, nil
	}
	pts := m.vclock.rtp(m.bind.video, f.PTS, arrival, &m.sroff)
	if m.conn == nil {
		return false, nil
	}
	if m.videoOn != m.gen && !f.Key {
		return true, nil // wait for a keyframe
	}
	dts := pts - (f.PTS - f.DTS)
	ms := max(m.vclock.ms(dts), m.lastV, 0)
	if m.headers != m.gen || (f.Key && (!bytes.Equal(m.sps, m.sentSPS) || !bytes.Equal(m.pps, m.sentPPS))) {
		if err := m.sendHeaders(uint32(ms)); err != nil {
			return false, err
		}
		if m.headers != m.gen {
			return true, nil // no parameter sets yet
		}
	}
	cts := max(int32(m.vclock.ms(pts)-m.vclock.ms(dts)), 0)
	m.vhead = rtmpproto.AVCFrameHeader(f.Key, cts)
	m.videoOn = m.gen
	m.lastV = ms
	m.frames++
	m.flowed()
	return false, m.conn.WriteVideo(uint32(ms), m.vhead[:], f.Data)
}

// audio writes one AAC access unit.
func (m *mux) audio(f *media.Frame, arrival int64) error {
	if m.bind == nil || m.bind.audio == nil {
		return nil
	}
	rel := m.aclock.rtp(m.bind.audio, f.PTS, arrival, &m.sroff)
	if m.conn == nil {
		return nil
	}
	if m.bind.video != nil && m.videoOn != m.gen {
		return nil // the stream starts with the video's keyframe
	}
	ms := max(m.aclock.ms(rel), m.lastA, 0)
	if m.headers != m.gen {
		if err := m.sendHeaders(uint32(ms)); err != nil {
			return err
		}
	}
	m.lastA = ms
	m.flowed()
	return m.conn.WriteAudio(uint32(ms), m.ahead[:], f.Data)
}

// sendHeaders writes onMetaData and the sequence headers of the bound tracks at ts, the
// timestamp of the frame they precede. Without
// parameter sets for the video yet, it writes nothing and leaves the headers due.
func (m *mux) sendHeaders(ts uint32) error {
	b := m.bind
	var avc []byte
	if b.video != nil {
		var err error
		if avc, err = rtmpproto.AVCSequenceHeader(m.sps, m.pps); err != nil {
			return nil //nolint:nilerr // no usable parameter sets yet: wait for the next keyframe's
		}
	}
	if m.headers != m.gen {
		w, h := 0, 0
		if b.video != nil {
			w, h = b.video.Size()
		}
		rate, ch := 0, 0
		if b.audio != nil {
			rate, ch = b.sampleRate, b.channels
		}
		if err := m.conn.WriteMetadata(rtmpproto.Metadata(w, h, 0, rate, ch)); err != nil {
			return err
		}
	}
	if avc != nil {
		if err := m.conn.WriteVideo(ts, nil, avc); err != nil {
			return err
		}
		m.sentSPS, m.sentPPS = m.sps, m.pps
	}
	if m.headers != m.gen && b.audio != nil && len(b.asc) > 0 {
		if err := m.conn.WriteAudio(ts, nil, rtmpproto.AACSequenceHeader(b.asc)); err != nil {
			return err
		}
	}
	m.headers = m.gen
	return nil
}

// end writes the AVC end of sequence before a polite close.
func (m *mux) end() {
	if m.conn != nil && m.bind != nil && m.bind.video != nil && m.videoOn == m.gen {
		_ = m.conn.WriteVideo(uint32(max(m.lastV, 0)), nil, rtmpproto.AVCEndOfSequence())
	}
}
