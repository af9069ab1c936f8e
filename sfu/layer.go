package sfu

import (
	"sync"
	"sync/atomic"
	"time"
)

// MaxLayers is the most simulcast layers a track carries (low, medium, high).
const MaxLayers = 3

// LayerHighest asks a subscription for the best layer the publisher sends: the default, and
// what recordings, broadcasts, RTSP, RTMP and HLS take.
const LayerHighest = MaxLayers - 1

// LayerKeyframeRequester is a KeyframeRequester that can ask for one simulcast layer's keyframe
// (a PLI to that layer's SSRC). A simulcast track's TrackSpec.Keyframes implements it.
type LayerKeyframeRequester interface {
	KeyframeRequester
	RequestLayerKeyframe(layer int)
}

// layers is the simulcast state of a track whose publisher sends TrackSpec.Layers > 1 variants
// of it (RFC 8853), told apart by Packet.Layer. A layer is a variant of the track, not a track:
// each subscription reads one layer at a time and switches at keyframes (Subscription.SetMaxLayer).
type layers struct {
	n int
	// mu serializes the producers: each layer arrives on its own goroutine.
	mu sync.Mutex
	// active has bit i set while layer i arrives: set by the producer on a layer's first packet,
	// cleared by the hub's ticker when the layer has been silent for layerSilence.
	active  atomic.Uint32
	lastAt  [MaxLayers]atomic.Int64 // unix nanoseconds of each layer's last packet
	bytes   [MaxLayers]atomic.Uint64
	rate    [MaxLayers]rateMeter
	lastReq [MaxLayers]atomic.Int64 // unix nanoseconds of the last keyframe request per layer
}

// layerSilence is how long a layer may go without a packet before it counts as stopped (the
// publisher paused it, or its bandwidth does not allow it): subscriptions then move to another.
const layerSilence = time.Second

// Layers returns how many simulcast layers the track carries (1 without simulcast).
func (t *Track) Layers() int {
	if t.sim == nil {
		return 1
	}
	return t.sim.n
}

// ActiveLayers returns a bit mask of the layers arriving now (bit 0: the lowest); 1 without
// simulcast.
func (t *Track) ActiveLayers() uint32 {
	if t.sim == nil {
		return 1
	}
	return t.sim.active.Load()
}

// LayerBitrate returns the last measured bitrate of layer in bits per second.
func (t *Track) LayerBitrate(layer int) float64 {
	if t.sim == nil || layer < 0 || layer >= t.sim.n {
		return t.rate.Bitrate()
	}
	return t.sim.rate[layer].Bitrate()
}

// WantedLayers returns a bit mask of the layers some subscription reads or moves to: what the
// publisher must keep sending (LiveKit's subscribed quality). Not for the packet path.
func (t *Track) WantedLayers() uint32 {
	if t.sim == nil {
		return 1
	}
	var m uint32
	for _, s := range *t.subs.Load() {
		m |= 1 << s.maxLayer.Load()
	}
	return m
}

// RequestLayerKeyframe asks the publisher for a keyframe of one layer, at most once per
// Config.KeyframeRequestInterval per layer. Safe for concurrent use; never blocks.
func (t *Track) RequestLayerKeyframe(layer int) {
	lk, ok := t.keyframes.(LayerKeyframeRequester)
	if t.sim == nil || !ok || layer < 0 || layer >= t.sim.n {
		t.RequestKeyframe()
		return
	}
	if t.closed.Load() {
		return
	}
	now := t.hub.clock().UnixNano()
	last := t.sim.lastReq[layer].Load()
	if now-last < int64(t.hub.cfg.KeyframeRequestInterval) || !t.sim.lastReq[layer].CompareAndSwap(last, now) {
		return
	}
	t.kfRequests.Add(1)
	lk.RequestLayerKeyframe(layer)
}

// noteLayer records a packet of a simulcast track; called by the producer under sim.mu.
func (l *layers) noteLayer(p *Packet, now int64) {
	i := p.Layer
	l.lastAt[i].Store(now)
	l.bytes[i].Add(uint64(len(p.Payload) + rtpHeaderSize))
	if bit := uint32(1) << i; l.active.Load()&bit == 0 {
		l.active.Or(bit)
	}
}

// update measures the layers' rates and forgets the silent ones; called by the hub's ticker.
func (l *layers) update(now time.Time) {
	for i := range l.n {
		l.rate[i].update(now, l.bytes[i].Load(), 0)
		if at := l.lastAt[i].Load(); at != 0 && now.UnixNano()-at > int64(layerSilence) {
			l.active.And(^(uint32(1) << i))
		}
	}
}

// targetLayer is the layer a subscription asking for up to max reads among active: the highest
// active one not above max, else the lowest active one, else none (-1).
func targetLayer(max int32, active uint32) int32 {
	for i := max; i >= 0; i-- {
		if active&(1<<i) != 0 {
			return i
		}
	}
	for i := max + 1; i < MaxLayers; i++ {
		if active&(1<<i) != 0 {
			return i
		}
	}
	return -1
}

// pickLayer decides whether a subscription of a simulcast track takes p, switching layers at
// keyframes only: it keeps reading its current layer until the target layer's keyframe arrives
// (requested once per change of target). Producer-owned; no allocation, no lock.
func (s *Subscription) pickLayer(p *Packet) bool {
	t := s.track
	want := targetLayer(s.maxLayer.Load(), t.sim.active.Load())
	if want < 0 {
		want = s.cur
	}
	layer := int32(p.Layer)
	if layer == s.cur {
		if want != s.cur {
			s.askLayer(want, p.Arrival)
		}
		return true
	}
	if layer != want {
		return false
	}
	if !p.Keyframe {
		s.askLayer(want, p.Arrival)
		return false
	}
	s.cur, s.asked = want, -1
	s.layer.Store(want)
	s.skipping = false // the keyframe starts the new layer; what was being skipped is behind
	s.pendingGap = true
	return true
}

// askLayer requests layer's keyframe for a switch: once, and again every keyframeRetry while
// it does not come.
func (s *Subscription) askLayer(layer int32, now int64) {
	if s.asked != layer || now-s.askedAt >= int64(keyframeRetry) {
		s.asked, s.askedAt = layer, now
		s.track.RequestLayerKeyframe(int(layer))
	}
}

// SetMaxLayer caps the layer the subscription reads (0: the lowest; LayerHighest, the default,
// takes the best the publisher sends). The switch happens at the next keyframe of the new layer,
// which is requested. Safe for concurrent use; without simulcast it does nothing.
func (s *Subscription) SetMaxLayer(layer int) {
	s.maxLayer.Store(int32(min(max(layer, 0), LayerHighest)))
}

// MaxLayer returns the cap set by SetMaxLayer.
func (s *Subscription) MaxLayer() int { return int(s.maxLayer.Load()) }

// Layer returns the simulcast layer the subscription reads now (-1 before its first keyframe;
// 0 without simulcast).
func (s *Subscription) Layer() int {
	if s.track.sim == nil {
		return 0
	}
	return int(s.layer.Load())
}
