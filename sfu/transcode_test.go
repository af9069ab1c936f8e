package sfu

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pion/transport/v4/test"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

var testAAC = Codec{Name: CodecAAC, ClockRate: 44100, Channels: 2, PayloadType: 97}

// eventsOf returns the types of the events about one participant.
func eventsOf(evs []Event, identity string) []string {
	var out []string
	for _, e := range evs {
		if e.Participant != nil && e.Participant.Identity == identity {
			out = append(out, e.Type)
		}
	}
	return out
}

// A derived track is read like any track, stays out of the publisher's tracks, and ends with
// its source: its subscribers get track.unsubscribed naming it and their subscriptions end.
func TestDerivedTrackEndsWithSource(t *testing.T) {
	defer test.CheckRoutines(t)()
	h, em := newTestHub(t, DefaultConfig())
	defer h.Close()
	pub, _ := h.Join("r", ParticipantSpec{Identity: "pub"})
	video, _ := pub.Publish(TrackSpec{Codec: testH264})
	audio, _ := pub.Publish(TrackSpec{Codec: testAAC, Source: SourceMicrophone})
	opus, end, err := audio.Derive(TrackSpec{Codec: testOpus})
	if err != nil {
		t.Fatal(err)
	}
	if got := pub.Tracks(); !slices.Equal(got, []*Track{video, audio}) {
		t.Fatalf("published tracks %v include the derived one", got)
	}
	if opus.DerivedFrom() != audio || !slices.Equal(audio.Derived(), []*Track{opus}) {
		t.Fatal("the derived track is not linked to its source")
	}
	if info := opus.Info(); info.TranscodedFrom != audio.SID() || info.Codec != CodecOpus ||
		info.ParticipantSID != pub.SID() || info.Source != SourceMicrophone {
		t.Fatalf("derived info %+v", info)
	}

	viewer, _ := h.Join("r", ParticipantSpec{Identity: "viewer"})
	sink := &collectSink{}
	sub, err := viewer.Subscribe(opus, sink, SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		opus.WritePacket(videoPacket(i, 100))
	}
	waitFor(t, "delivery", func() bool { s, _, _ := sink.snapshot(); return len(s) == 5 })
	if st := h.Room("r").Status(); len(st.Participants[0].Tracks[1].Transcoded) != 1 ||
		st.Participants[0].Tracks[1].Transcoded[0].Subscribers != 1 {
		t.Fatalf("status does not show the transcoded track: %+v", st.Participants[0].Tracks[1])
	}

	if err := pub.Unpublish(audio, ""); err != nil {
		t.Fatal(err)
	}
	<-sub.Done()
	if !errors.Is(sub.Err(), ErrTrackClosed) || !opus.Closed() {
		t.Fatalf("the subscription to the derived track ended with %v (closed %v)", sub.Err(), opus.Closed())
	}
	end() // after the source ended: nothing more happens
	end()
	if _, _, err := audio.Derive(TrackSpec{Codec: testOpus}); !errors.Is(err, ErrTrackClosed) {
		t.Fatalf("derive from an ended track: %v", err)
	}
	viewer.Unsubscribe(sub)
	evs := em.Events(0)
	if got, want := eventsOf(evs, "viewer"), []string{EventParticipantJoined, EventTrackSubscribed, EventTrackUnsubscribed}; !slices.Equal(got, want) {
		t.Fatalf("viewer events %v, want %v", got, want)
	}
	for _, e := range evs {
		if e.Type == EventTrackSubscribed && e.Track.TranscodedFrom != audio.SID() {
			t.Fatalf("track.subscribed does not say the track is transcoded: %+v", e.Track)
		}
	}
	if got := eventsOf(evs, "pub"); slices.Contains(got, EventTrackPublished) && strings.Count(strings.Join(got, " "), EventTrackPublished) != 2 {
		t.Fatalf("publisher events %v: the derived track must not be announced", got)
	}
}

// Ending a derived track ends its subscriptions and unlinks it; the source goes on.
func TestDerivedTrackEnd(t *testing.T) {
	defer test.CheckRoutines(t)()
	h, em := newTestHub(t, DefaultConfig())
	defer h.Close()
	pub, _ := h.Join("r", ParticipantSpec{Identity: "pub"})
	audio, _ := pub.Publish(TrackSpec{Codec: testAAC})
	opus, end, err := audio.Derive(TrackSpec{Codec: testOpus})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := opus.Derive(TrackSpec{Codec: testAAC}); err == nil {
		t.Fatal("a derived track was derived from")
	}
	viewer, _ := h.Join("r", ParticipantSpec{Identity: "viewer"})
	sub, err := viewer.Subscribe(opus, &collectSink{}, SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	changed := h.Changed()
	end()
	<-sub.Done()
	<-changed
	if !errors.Is(sub.Err(), ErrTrackClosed) || audio.Closed() || len(audio.Derived()) != 0 {
		t.Fatalf("sub err %v, source closed %v, derived %v", sub.Err(), audio.Closed(), audio.Derived())
	}
	if got := eventsOf(em.Events(0), "viewer"); !slices.Equal(got, []string{EventParticipantJoined, EventTrackSubscribed, EventTrackUnsubscribed}) {
		t.Fatalf("viewer events %v", got)
	}
	viewer.Unsubscribe(sub) // the owner still releases it; no second event
	if got := eventsOf(em.Events(0), "viewer"); len(got) != 3 {
		t.Fatalf("viewer events after unsubscribe %v", got)
	}
}

// A derived track made while its source is being unpublished is never left open.
func TestDeriveRacesUnpublish(t *testing.T) {
	defer test.CheckRoutines(t)()
	h, _ := newTestHub(t, DefaultConfig())
	defer h.Close()
	pub, _ := h.Join("r", ParticipantSpec{Identity: "pub"})
	for range 200 {
		audio, _ := pub.Publish(TrackSpec{Codec: testAAC})
		var wg sync.WaitGroup
		var d *Track
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, _, _ = audio.Derive(TrackSpec{Codec: testOpus})
		}()
		_ = pub.Unpublish(audio, "")
		wg.Wait()
		if d != nil && !d.Closed() {
			t.Fatal("a track derived during the unpublish stayed open")
		}
	}
}

type fakeTranscoder struct{ calls int }

func (f *fakeTranscoder) Transcode(src *Track, to string) (*Track, func(), error) {
	f.calls++
	d, end, err := src.Derive(TrackSpec{Codec: Codec{Name: to, ClockRate: 48000}})
	return d, end, err
}

func TestHubTranscode(t *testing.T) {
	h, _ := newTestHub(t, DefaultConfig())
	defer h.Close()
	pub, _ := h.Join("r", ParticipantSpec{Identity: "pub"})
	audio, _ := pub.Publish(TrackSpec{Codec: testAAC})
	if _, _, err := h.Transcode(audio, CodecOpus); !errors.Is(err, ErrNoTranscoder) {
		t.Fatalf("without a transcoder: %v", err)
	}
	f := &fakeTranscoder{}
	h.SetTranscoder(f)
	out, release, err := h.Transcode(audio, CodecOpus)
	if err != nil || f.calls != 1 || out.Codec().Name != CodecOpus {
		t.Fatalf("transcode: %v %v", out, err)
	}
	release()
	h.SetTranscoder(nil)
	if _, _, err := h.Transcode(audio, CodecOpus); !errors.Is(err, ErrNoTranscoder) {
		t.Fatalf("after removing the transcoder: %v", err)
	}
}

// Subscriptions to derived tracks count in sluice_subscriptions and the delivery totals.
func TestDerivedTrackMetrics(t *testing.T) {
	defer test.CheckRoutines(t)()
	h, _ := newTestHub(t, DefaultConfig())
	defer h.Close()
	pub, _ := h.Join("r", ParticipantSpec{Identity: "pub"})
	audio, _ := pub.Publish(TrackSpec{Codec: testAAC})
	opus, end, _ := audio.Derive(TrackSpec{Codec: testOpus})
	defer end()
	sink := &collectSink{}
	sub, _ := opus.Subscribe(sink, SubscribeOptions{})
	defer sub.Close()
	for i := range 3 {
		opus.WritePacket(videoPacket(i, 100))
	}
	waitFor(t, "delivery", func() bool { s, _, _ := sink.snapshot(); return len(s) == 3 })
	got := map[string]float64{}
	ch := make(chan prometheus.Metric, 64)
	h.Collect(ch)
	close(ch)
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		name := m.Desc().String()
		switch {
		case pb.Gauge != nil:
			got[name] = pb.Gauge.GetValue()
		case pb.Counter != nil:
			got[name] = pb.Counter.GetValue()
		}
	}
	for name, want := range map[string]float64{"sluice_subscriptions": 1, "sluice_packets_out_total": 3, "sluice_packets_in_total": 0} {
		found := false
		for desc, v := range got {
			if strings.Contains(desc, `"`+name+`"`) {
				found = true
				if v != want {
					t.Errorf("%s = %v, want %v", name, v, want)
				}
			}
		}
		if !found {
			t.Errorf("%s not collected", name)
		}
	}
}
