package rtc

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/sdp/v3"
	"github.com/pion/transport/v4/test"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
)

// simPublisher is a pion WHIP publisher sending one H.264 track as three simulcast layers
// (rid q, h, f): each frame's first payload byte after the NAL header is its layer, and the
// layers' frames are 200, 600 and 1400 bytes (about 50, 150 and 340 kbit/s at 30 fps). Layers
// can be paused, as a LiveKit client pauses those nobody reads.
type simPublisher struct {
	pc      *webrtc.PeerConnection
	session *Session
	layers  [3]*webrtc.TrackLocalStaticRTP
	paused  [3]atomic.Bool
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
	mid     string
	midExt  uint8
	ridExt  uint8
}

var simRIDs = [3]string{"q", "h", "f"}

func publishSimulcast(t *testing.T, api *webrtc.API, endpoint string) *simPublisher {
	t.Helper()
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	p := &simPublisher{pc: pc, stop: make(chan struct{}), done: make(chan struct{})}
	codec := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"}
	for i, rid := range simRIDs {
		p.layers[i], err = webrtc.NewTrackLocalStaticRTP(codec, "video", "pub", webrtc.WithRTPStreamID(rid))
		if err != nil {
			t.Fatal(err)
		}
	}
	sender, err := pc.AddTrack(p.layers[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range p.layers[1:] {
		if err := sender.AddEncoding(l); err != nil {
			t.Fatal(err)
		}
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			if _, _, err := sender.Read(buf); err != nil {
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if p.session, err = Negotiate(ctx, endpoint, "", pc); err != nil {
		_ = pc.Close()
		t.Fatal(err)
	}
	// pion's sender does not write the mid and rid extensions a receiver sorts layers by.
	for _, e := range sender.GetParameters().HeaderExtensions {
		switch e.URI {
		case sdp.SDESMidURI:
			p.midExt = uint8(e.ID)
		case sdp.SDESRTPStreamIDURI:
			p.ridExt = uint8(e.ID)
		}
	}
	for _, tr := range pc.GetTransceivers() {
		p.mid = tr.Mid()
	}
	go p.run()
	return p
}

func (p *simPublisher) run() {
	defer close(p.done)
	tick := time.NewTicker(33 * time.Millisecond)
	defer tick.Stop()
	var seq [3]uint16
	for frame := 0; ; frame++ {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		for l, tr := range p.layers {
			if p.paused[l].Load() {
				continue
			}
			for _, pkt := range h264Frame(frame, &seq[l]) {
				if pkt.Payload[0] == 0x41 { // a delta frame: its size is the layer's
					pkt.Payload = make([]byte, [3]int{200, 600, 1400}[l])
					pkt.Payload[0] = 0x41
				}
				if pkt.Payload[0] != 0x78 {
					pkt.Payload[2] = byte(l)
				}
				_ = pkt.Header.SetExtension(p.midExt, []byte(p.mid))
				_ = pkt.Header.SetExtension(p.ridExt, []byte(simRIDs[l]))
				_ = tr.WriteRTP(pkt)
			}
		}
	}
}

func (p *simPublisher) close() {
	p.once.Do(func() {
		close(p.stop)
		<-p.done
		_ = p.session.Close(context.Background())
		_ = p.pc.Close()
	})
}

// layerViewer is a pion WHEP viewer noting the layer of each video packet and the sequence
// numbers' continuity. lossy makes it send receiver reports of 40% loss every 200 ms, as a
// viewer behind a narrow link would.
type layerViewer struct {
	pc      *webrtc.PeerConnection
	session *Session
	layer   atomic.Int32
	packets atomic.Int64
	jumps   atomic.Int64 // sequence numbers that did not follow the previous one
	lossy   atomic.Bool
	ssrc    atomic.Uint32
	wg      sync.WaitGroup
	stop    chan struct{}
}

func playLayers(t *testing.T, api *webrtc.API, endpoint string) *layerViewer {
	t.Helper()
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	v := &layerViewer{pc: pc, stop: make(chan struct{})}
	v.layer.Store(-1)
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		v.ssrc.Store(uint32(tr.SSRC()))
		v.wg.Add(1)
		defer v.wg.Done()
		var last uint16
		for n := 0; ; n++ {
			pkt, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			if n > 0 && pkt.SequenceNumber != last+1 {
				v.jumps.Add(1)
			}
			last = pkt.SequenceNumber
			v.packets.Add(1)
			if len(pkt.Payload) > 2 && pkt.Payload[0] != 0x78 {
				v.layer.Store(int32(pkt.Payload[2]))
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if v.session, err = Negotiate(ctx, endpoint, "", pc); err != nil {
		_ = pc.Close()
		t.Fatal(err)
	}
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-v.stop:
				return
			case <-tick.C:
			}
			if ssrc := v.ssrc.Load(); ssrc != 0 && v.lossy.Load() {
				_ = pc.WriteRTCP([]rtcp.Packet{&rtcp.ReceiverReport{SSRC: 1, Reports: []rtcp.ReceptionReport{{SSRC: ssrc, FractionLost: 102}}}})
			}
		}
	}()
	return v
}

func (v *layerViewer) close() {
	close(v.stop)
	_ = v.session.Close(context.Background())
	_ = v.pc.Close()
	v.wg.Wait()
}

// TestSimulcastWHIPToWHEP publishes three layers through WHIP and plays them to two WHEP viewers:
// both start on the top layer; one whose reports show heavy loss moves to the lowest and comes
// back to the top once they are clean, while the other stays on top; sequence numbers run on
// without a jump across the switches.
func TestSimulcastWHIPToWHEP(t *testing.T) {
	defer test.CheckRoutines(t)()
	h := newHarness(t, auth.Config{})
	defer h.close()
	client := clientAPI(t)
	pub := publishSimulcast(t, client, h.http.URL+"/whip/sim")
	defer pub.close()
	var track *sfu.Track
	waitUntil(t, "the simulcast track with its three layers", 10*time.Second, func() bool {
		r := h.hub.Room("sim")
		if r == nil || r.MainPublisher() == nil || len(r.MainPublisher().Tracks()) != 1 {
			return false
		}

		track = r.MainPublisher().Tracks()[0]
		return track.ActiveLayers() == 0b111
	})
	if track.Layers() != 3 {
		t.Fatalf("track has %d layers, want 3", track.Layers())
	}
	clean := playLayers(t, client, h.http.URL+"/whep/sim")
	defer clean.close()
	shaped := playLayers(t, client, h.http.URL+"/whep/sim")
	defer shaped.close()
	waitUntil(t, "both viewers on the top layer", 10*time.Second, func() bool {
		return clean.layer.Load() == 2 && shaped.layer.Load() == 2
	})
	shaped.lossy.Store(true)
	waitUntil(t, "the lossy viewer on the lowest layer", 10*time.Second, func() bool { return shaped.layer.Load() == 0 })
	shaped.lossy.Store(false)
	waitUntil(t, "the viewer back on the top layer", 15*time.Second, func() bool { return shaped.layer.Load() == 2 })
	if clean.layer.Load() != 2 {
		t.Errorf("the clean viewer is on layer %d", clean.layer.Load())
	}
	for name, v := range map[string]*layerViewer{"clean": clean, "shaped": shaped} {
		if j := v.jumps.Load(); j > 0 {
			t.Errorf("%s viewer: %d sequence jumps in %d packets", name, j, v.packets.Load())
		}
	}
}
