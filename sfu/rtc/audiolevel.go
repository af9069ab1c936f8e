package rtc

import (
	"encoding/binary"
	"strings"
	"sync"

	"github.com/pion/interceptor"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu"
)

// registerAudioLevel offers and accepts the RFC 6464 audio level header extension on audio,
// which WebRTC publishers (browsers, livekit-client) then put on every packet.
func registerAudioLevel(m *webrtc.MediaEngine) error {
	return m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.AudioLevelURI}, webrtc.RTPCodecTypeAudio)
}

// levelTaps hands each peer connection of the publishers' API an interceptor that reads the
// audio level extension of the audio it receives into a meter per stream; a publisher hands
// its track the meter of the stream's SSRC (Engine.AudioLevel).
type levelTaps struct{ meters sync.Map } // levelKey → *sfu.AudioLevel

type levelKey struct {
	pc   string
	ssrc uint32
}

// NewInterceptor implements interceptor.Factory; Build calls it with the connection's id.
func (t *levelTaps) NewInterceptor(id string) (interceptor.Interceptor, error) {
	return &levelTap{taps: t, id: id}, nil
}

// levelTap is one connection's interceptor: packets pass untouched.
type levelTap struct {
	interceptor.NoOp
	taps  *levelTaps
	id    string
	mu    sync.Mutex
	ssrcs []uint32
}

// BindRemoteStream implements interceptor.Interceptor (once per received stream): an audio
// stream that negotiated the extension gets a meter, fed by its reader.
func (l *levelTap) BindRemoteStream(info *interceptor.StreamInfo, reader interceptor.RTPReader) interceptor.RTPReader {
	if !strings.HasPrefix(strings.ToLower(info.MimeType), "audio/") {
		return reader
	}
	var id uint8
	for _, e := range info.RTPHeaderExtensions {
		if e.URI == sdp.AudioLevelURI && e.ID > 0 && e.ID < 256 {
			id = uint8(e.ID)
		}
	}
	if id == 0 {
		return reader
	}
	meter := sfu.NewAudioLevel()
	l.taps.meters.Store(levelKey{l.id, info.SSRC}, meter)
	l.mu.Lock()
	l.ssrcs = append(l.ssrcs, info.SSRC)
	l.mu.Unlock()
	return interceptor.RTPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		n, a, err := reader.Read(b, a)
		if err == nil {
			if level, ok := AudioLevelOf(b[:n], id); ok {
				meter.Observe(level)
			}
		}
		return n, a, err
	})
}

// UnbindRemoteStream implements interceptor.Interceptor.
func (l *levelTap) UnbindRemoteStream(info *interceptor.StreamInfo) {
	l.taps.meters.Delete(levelKey{l.id, info.SSRC})
}

// Close implements interceptor.Interceptor: the connection is closing.
func (l *levelTap) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ssrc := range l.ssrcs {
		l.taps.meters.Delete(levelKey{l.id, ssrc})
	}
	l.ssrcs = nil
	return nil
}

// AudioLevel returns the level meter of the audio stream ssrc that pc (a connection made by
// NewPeerConnection) receives, or nil when that stream carries no audio level extension. A
// publisher puts it in the TrackSpec of the stream's track.
func (e *Engine) AudioLevel(pc *webrtc.PeerConnection, ssrc uint32) *sfu.AudioLevel {
	if m, ok := e.levels.meters.Load(levelKey{pc.ID(), ssrc}); ok {
		return m.(*sfu.AudioLevel)
	}
	return nil
}

// AudioLevelOf returns the level (RFC 6464: -dBov, 0 loudest … 127 silence) that the header
// extension id of the RTP packet pkt carries, in the one-byte or two-byte header form (RFC
// 8285). It reads pkt in place and allocates nothing.
func AudioLevelOf(pkt []byte, id uint8) (uint8, bool) {
	if len(pkt) < 12 || pkt[0]>>6 != 2 || pkt[0]&0x10 == 0 {
		return 0, false
	}
	off := 12 + 4*int(pkt[0]&0x0f)
	if len(pkt) < off+4 {
		return 0, false
	}
	profile := binary.BigEndian.Uint16(pkt[off:])
	end := off + 4 + 4*int(binary.BigEndian.Uint16(pkt[off+2:]))
	if end > len(pkt) {
		return 0, false
	}
	ext := pkt[off+4 : end]
	switch {
	case profile == 0xBEDE: // one-byte headers
		for i := 0; i < len(ext); {
			if ext[i] == 0 { // padding
				i++
				continue
			}
			eid, size := ext[i]>>4, int(ext[i]&0x0f)+1
			if eid == 15 {
				break
			}
			if i+1+size > len(ext) {
				return 0, false
			}
			if eid == id {
				return ext[i+1] & 0x7f, true
			}
			i += 1 + size
		}
	case profile&0xFFF0 == 0x1000: // two-byte headers
		for i := 0; i < len(ext); {
			if ext[i] == 0 {
				i++
				continue
			}
			if i+2 > len(ext) {
				return 0, false
			}
			eid, size := ext[i], int(ext[i+1])
			if i+2+size > len(ext) {
				return 0, false
			}
			if eid == id && size > 0 {
				return ext[i+2] & 0x7f, true
			}
			i += 2 + size
		}
	}
	return 0, false
}
