package rtc

import (
	"strings"
	"sync/atomic"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu"
)

// SimulcastTrack is a publisher's simulcast track (RFC 8853): one sfu track whose layers arrive
// as remote tracks of one receiver, told apart by rid. It asks for keyframes by layer (a PLI to
// the layer's SSRC); safe for concurrent use.
type SimulcastTrack struct {
	PC    *webrtc.PeerConnection
	Track *sfu.Track
	ssrc  [sfu.MaxLayers]atomic.Uint32
}

// SetSSRC records the SSRC of a layer once its first packet has arrived.
func (s *SimulcastTrack) SetSSRC(layer int, ssrc uint32) {
	if layer >= 0 && layer < sfu.MaxLayers {
		s.ssrc[layer].Store(ssrc)
	}
}

// RequestKeyframe implements sfu.KeyframeRequester: every layer's keyframe.
func (s *SimulcastTrack) RequestKeyframe() {
	for i := range s.ssrc {
		s.RequestLayerKeyframe(i)
	}
}

// RequestLayerKeyframe implements sfu.LayerKeyframeRequester.
func (s *SimulcastTrack) RequestLayerKeyframe(layer int) {
	if layer < 0 || layer >= sfu.MaxLayers {
		return
	}
	if ssrc := s.ssrc[layer].Load(); ssrc != 0 {
		_ = s.PC.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}})
	}
}

// RIDLayer maps a simulcast rid to its layer, 0 the lowest: LiveKit's q/h/f and the usual
// low/mid/high names, else its place among the receiver's rids in the offer, which publishers
// list lowest first.
func RIDLayer(rid string, recv *webrtc.RTPReceiver) int {
	switch strings.ToLower(rid) {
	case "q", "l", "low", "lo":
		return 0
	case "h", "m", "mid", "medium":
		return 1
	case "f", "full", "high", "hi":
		return 2
	}
	if recv != nil {
		for i, t := range recv.Tracks() {
			if t.RID() == rid {
				return min(i, sfu.MaxLayers-1)
			}
		}
	}
	return 0
}
