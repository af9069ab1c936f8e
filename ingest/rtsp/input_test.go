package rtsp

import (
	"slices"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"

	"github.com/sluice-media/sluice/ingest/rtsp/rtsptest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// newTestInput publishes an input's track in a fresh hub and subscribes a sink to it.
func newTestInput(t *testing.T, f format.Format) (*input, *packetSink) {
	t.Helper()
	hub, err := sfu.NewHub(sfu.Options{Config: sfu.DefaultConfig()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	m := &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{f}}
	in, err := newInput(m, f, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	p, err := hub.Join("r", sfu.ParticipantSpec{Identity: "cam"})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := p.Publish(in.trackSpec())
	if err != nil {
		t.Fatal(err)
	}
	if err := in.attach(tr); err != nil {
		t.Fatal(err)
	}
	sink := &packetSink{}
	sub, err := tr.Subscribe(sink, sfu.SubscribeOptions{QueueSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	return in, sink
}

// Access units keep their own timestamps whether the source ends them with the marker bit
// (ffmpeg, most cameras) or only by changing the timestamp (cameras that never set it).
func TestInputH264Timestamps(t *testing.T) {
	fx := rtsptest.LoadFixtures(t)
	idr, slice := fx.Video[0][0], fx.Video[1][0] // an IDR slice and a P slice of the fixture
	fu := func(n []byte, start, end bool) []byte {
		b := []byte{n[0]&0xe0 | 28, n[0] & 0x1f}
		if start {
			b[1] |= 0x80
		}
		if end {
			b[1] |= 0x40
		}
		return append(b, n[1:30]...)
	}
	type pkt struct {
		ts      uint32
		marker  bool
		payload []byte
	}
	for _, tc := range []struct {
		name string
		pkts []pkt
		want []uint32 // timestamps of the access units written
	}{
		{"marker", []pkt{
			{0, false, fu(idr, true, false)}, {0, true, fu(idr, false, true)},
			{3600, true, slice}, {7200, true, slice},
			{10800, false, fu(idr, true, false)}, {10800, true, fu(idr, false, true)},
			{14400, true, slice},
		}, []uint32{0, 3600, 7200, 10800, 14400}},
		{"no marker", []pkt{
			{0, false, fu(idr, true, false)}, {0, false, fu(idr, false, true)},
			{3600, false, slice}, {7200, false, slice}, {10800, false, slice},
		}, []uint32{0, 3600, 7200}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, sink := newTestInput(t, &format.H264{PayloadTyp: 96, PacketizationMode: 1, SPS: fx.SPS, PPS: fx.PPS})
			for i, p := range tc.pkts {
				in.onRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: uint16(i), Timestamp: p.ts, Marker: p.marker}, Payload: p.payload})
			}
			var got []uint32
			sfutest.WaitFor(t, "the access units", 5*time.Second, func() bool {
				got = got[:0]
				for _, p := range sink.all() {
					if p.Header.Marker {
						got = append(got, p.Header.Timestamp)
					}
				}
				return len(got) >= len(tc.want)
			})
			if !slices.Equal(got, tc.want) {
				t.Errorf("access unit timestamps %v, want %v", got, tc.want)
			}
			if in.decodeErrors.Load() != 0 {
				t.Errorf("%d decode errors", in.decodeErrors.Load())
			}
		})
	}
}

// newInput takes what sluice publishes and refuses the rest without panicking.
func TestInputCodecs(t *testing.T) {
	for _, tc := range []struct {
		f     format.Format
		codec string
		pass  bool
	}{
		{&format.H264{PayloadTyp: 96, PacketizationMode: 1}, sfu.CodecH264, false},
		{&format.H265{PayloadTyp: 96}, sfu.CodecH265, false},
		{&format.VP8{PayloadTyp: 96}, sfu.CodecVP8, false},
		{&format.VP9{PayloadTyp: 96}, sfu.CodecVP9, false},
		{&format.AV1{PayloadTyp: 96}, sfu.CodecAV1, false},
		{&format.G711{PayloadTyp: 8, SampleRate: 8000, ChannelCount: 1}, sfu.CodecPCMA, true},
		{&format.G711{PayloadTyp: 0, MULaw: true, SampleRate: 8000, ChannelCount: 1}, sfu.CodecPCMU, true},
		{&format.G722{}, sfu.CodecG722, true},
		{&format.Opus{PayloadTyp: 111, ChannelCount: 1}, sfu.CodecOpus, true},
		{&format.MPEG4Audio{PayloadTyp: 97}, "", false},                                  // no config
		{&format.MPEG4AudioLATM{PayloadTyp: 97, CPresent: true}, "", false},              // in-band config
		{&format.MJPEG{}, "", false},                                                     // unsupported
		{&format.Generic{PayloadTyp: 107, RTPMa: "vnd.onvif.metadata/90000"}, "", false}, // unsupported
	} {
		in, err := newInput(&description.Media{}, tc.f, time.Now)
		if tc.codec == "" {
			if err == nil {
				t.Errorf("%s: accepted", codecLabel(tc.f))
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", codecLabel(tc.f), err)
			continue
		}
		if in.codec.Name != tc.codec || in.pass != tc.pass {
			t.Errorf("%s: codec %s pass %v", codecLabel(tc.f), in.codec.Name, in.pass)
		}
		if _, err := playFormat(in.codec, 96); err != nil {
			t.Errorf("%s cannot be played back: %v", in.codec.Name, err)
		}
	}
}
