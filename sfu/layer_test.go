package sfu

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// layerKF records the layers whose keyframes were requested.
type layerKF struct {
	mu   sync.Mutex
	asks []int
}

func (l *layerKF) RequestKeyframe() { l.RequestLayerKeyframe(-1) }
func (l *layerKF) RequestLayerKeyframe(layer int) {
	l.mu.Lock()
	l.asks = append(l.asks, layer)
	l.mu.Unlock()
}

func (l *layerKF) asked(layer int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range l.asks {
		if a == layer {
			return true
		}
	}
	return false
}

// chanSink passes each packet's layer, keyframe flag and gap on.
type chanSink chan [3]int

func (c chanSink) WritePacket(p *Packet, gap bool) error {
	k, g := 0, 0
	if p.Keyframe {
		k = 1
	}
	if gap {
		g = 1
	}
	c <- [3]int{int(p.Layer), k, g}
	return nil
}

func TestTargetLayer(t *testing.T) {
	for _, c := range []struct {
		max    int32
		active uint32
		want   int32
	}{
		{2, 0b111, 2}, {1, 0b111, 1}, {0, 0b111, 0},
		{2, 0b011, 1}, // the top layer paused: the next one
		{0, 0b110, 1}, // the low layer paused: the lowest one sent
		{2, 0, -1},
	} {
		if got := targetLayer(c.max, c.active); got != c.want {
			t.Errorf("targetLayer(%d, %b) = %d, want %d", c.max, c.active, got, c.want)
		}
	}
}

// TestSimulcastSwitchAtKeyframes sends three layers and checks that a subscription starts at a
// keyframe of the layer it asks for, keeps its layer until the next one's keyframe when its cap
// changes (asking for that keyframe), and marks the switch as a gap.
func TestSimulcastSwitchAtKeyframes(t *testing.T) {
	h, _ := newTestHub(t, DefaultConfig())
	pub, err := h.Join("sim", ParticipantSpec{Identity: "pub"})
	if err != nil {
		t.Fatal(err)
	}
	kf := &layerKF{}
	track, err := pub.Publish(TrackSpec{Codec: testH264, Layers: 3, Keyframes: kf})
	if err != nil {
		t.Fatal(err)
	}
	out := make(chanSink, 1024)
	sub, err := track.Subscribe(out, SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var seq [3]uint16
	send := func(layer int, key bool) {
		seq[layer]++
		track.WritePacket(&Packet{Header: rtp.Header{SequenceNumber: seq[layer], Marker: true}, Keyframe: key, Layer: uint8(layer), Payload: []byte{1}})
	}
	recv := func() [3]int {
		select {
		case r := <-out:
			return r
		case <-time.After(5 * time.Second):
			t.Fatal("no packet")
			return [3]int{}
		}
	}
	// Delta frames of every layer, then a keyframe of the top one: the subscription starts there.
	for l := range 3 {
		send(l, false)
	}
	send(2, true)
	if r := recv(); r[0] != 2 || r[1] != 1 {
		t.Fatalf("first packet %v, want the top layer's keyframe", r)
	}
	if !kf.asked(2) {
		t.Errorf("no keyframe asked for layer 2: %v", kf.asks)
	}
	if sub.Layer() != 2 {
		t.Fatalf("Layer() = %d, want 2", sub.Layer())
	}
	// Capped at 0: layer 2 goes on until layer 0 has a keyframe, which is asked for.
	sub.SetMaxLayer(0)
	send(0, false)
	send(2, false)
	send(1, true)
	if r := recv(); r != [3]int{2, 0, 0} {
		t.Fatalf("got %v, want layer 2 going on before the switch", r)
	}
	if !kf.asked(0) {
		t.Errorf("no keyframe asked for layer 0: %v", kf.asks)
	}
	send(0, true)
	send(2, false)
	send(0, false)
	if r := recv(); r != [3]int{0, 1, 1} {
		t.Fatalf("got %v, want layer 0's keyframe after a gap", r)
	}
	if r := recv(); r != [3]int{0, 0, 0} {
		t.Fatalf("got %v, want layer 0 only", r)
	}
	if got := track.WantedLayers(); got != 1 {
		t.Errorf("WantedLayers = %b, want 1", got)
	}
}

// BenchmarkLayerSelection measures what simulcast adds to a delivery: a simulcast track whose
// subscribers read the top layer, against a plain track (BenchmarkFanout's case). Each packet
// goes through every subscriber's layer choice; two of three are dropped there.
func BenchmarkLayerSelection(b *testing.B) {
	for _, sinks := range []int{1, 100} {
		b.Run(fmt.Sprintf("sinks=%d", sinks), func(b *testing.B) {
			h, _ := NewHub(Options{Config: DefaultConfig()})
			defer h.Close()
			pub, _ := h.Join("bench", ParticipantSpec{Identity: "pub"})
			track, _ := pub.Publish(TrackSpec{Codec: testH264, Layers: 3, Keyframes: &layerKF{}})
			subs := make([]*Subscription, sinks)
			for i := range subs {
				subs[i] = &Subscription{track: track, cur: 2, asked: -1}
				subs[i].maxLayer.Store(2)
			}
			pkts := make([]*Packet, 3)
			for i := range pkts {
				pkts[i] = &Packet{Layer: uint8(i), Payload: make([]byte, 1100)}
				track.sim.noteLayer(pkts[i], 1)
			}
			b.ReportAllocs()
			b.ResetTimer()
			taken := 0
			for i := range b.N {
				p := pkts[i%3]
				for _, s := range subs {
					if s.pickLayer(p) {
						taken++
					}
				}
			}
			b.StopTimer()
			if taken != b.N/3*sinks {
				b.Fatalf("took %d of %d", taken, b.N*sinks)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(sinks), "ns/pkt/sink")
		})
	}
}
