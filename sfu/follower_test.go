package sfu

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pion/transport/v4/test"
)

// followWorld is a hub with one room whose publishers a follower test changes step by step.
type followWorld struct {
	t      *testing.T
	h      *Hub
	now    time.Time
	pubs   map[string]*Participant
	tracks map[string]*Track // by TrackSpec.Name
	tc     *followTranscoder
}

func (w *followWorld) join(identity string) {
	p, err := w.h.Join("room", ParticipantSpec{Identity: identity})
	if err != nil {
		w.t.Fatal(err)
	}
	w.pubs[identity] = p
}

func (w *followWorld) publish(identity, name string, c Codec) {
	tr, err := w.pubs[identity].Publish(TrackSpec{Codec: c, Name: name})
	if err != nil {
		w.t.Fatal(err)
	}
	w.tracks[name] = tr
}

func (w *followWorld) leave(identity string) { w.pubs[identity].Close(ReasonClientDisconnected, nil) }

func (w *followWorld) unpublish(name string) {
	tr := w.tracks[name]
	if err := tr.participant.Unpublish(tr, ""); err != nil {
		w.t.Fatal(err)
	}
}

// followTranscoder converts into any codec by deriving a track named "<source>><codec>"; it
// records a release that comes while someone still reads the conversion.
type followTranscoder struct {
	mu        sync.Mutex
	ends      map[string]func()
	acquired  int
	released  int
	misplaced []string
}

func (f *followTranscoder) Transcode(src *Track, to string) (*Track, func(), error) {
	if to == "refuse" {
		return nil, nil, errors.New("no such conversion")
	}
	d, end, err := src.Derive(TrackSpec{Codec: Codec{Name: to, ClockRate: 48000}, Name: src.spec.Name + ">" + to})
	if err != nil {
		return nil, nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.acquired++
	f.ends[d.spec.Name] = end
	var once sync.Once
	return d, func() {
		once.Do(func() {
			f.mu.Lock()
			f.released++
			if n := len(d.Subscriptions()); n > 0 {
				f.misplaced = append(f.misplaced, fmt.Sprintf("%s released with %d readers", d.spec.Name, n))
			}
			f.mu.Unlock()
			end()
		})
	}, nil
}

// stop ends a conversion as a transcoder that gives up does.
func (f *followTranscoder) stop(name string) {
	f.mu.Lock()
	end := f.ends[name]
	f.mu.Unlock()
	end()
}

// followStep changes the room, runs Update and says what the follower reads then.
type followStep struct {
	do      func(w *followWorld)
	source  string // identity of the source ("" none)
	video   string // name of the track the video leg reads ("" none)
	audio   string
	problem string // code of the problem this update reports ("" none)
	recheck bool   // the follower waits for a settle time
	quiet   bool   // the step changes no room
}

// publisher is a step that joins identity and publishes H.264 video "<identity>-v" and audio
// "<identity>-<codec>".
func publisher(identity string, audio Codec) func(w *followWorld) {
	return func(w *followWorld) {
		w.join(identity)
		w.publish(identity, identity+"-v", testH264)
		w.publish(identity, identity+"-"+audio.Name, audio)
	}
}

func takes(name string) func(Codec) bool { return func(c Codec) bool { return c.Name == name } }
func convertTo(name string) func(Codec) string {
	return func(Codec) string { return name }
}

// A follower keeps its legs on the room's source as publishers come, go, reconnect and change
// codecs; its subscriptions follow, and conversions are released once nobody reads them.
func TestFollower(t *testing.T) {
	anyVideo := Leg{Kind: KindVideo}
	anyAudio := Leg{Kind: KindAudio}
	cases := []struct {
		name          string
		sel           Selector
		legs          []Leg
		noTranscoder  bool
		settle        time.Duration
		steps         []followStep
		wantSwitches  int // subscriptions after the first, over every leg
		wantConverted int // conversions started
	}{
		{
			name: "the main publisher leaves: the next one takes over",
			legs: []Leg{anyVideo, anyAudio},
			steps: []followStep{
				{do: func(w *followWorld) {
					publisher("a", testOpus)(w)
					publisher("b", testOpus)(w)
				}, source: "a", video: "a-v", audio: "a-opus"},
				{do: func(w *followWorld) { w.leave("a") }, source: "b", video: "b-v", audio: "b-opus"},
				{do: func(w *followWorld) { w.leave("b") }},
			},
			wantSwitches: 2,
		},
		{
			name: "the main publisher is the earliest one still publishing video",
			legs: []Leg{anyVideo, anyAudio},
			steps: []followStep{
				{do: func(w *followWorld) {
					w.join("radio")
					w.publish("radio", "r-a", testOpus)
					w.join("cam")
					w.publish("cam", "c-v", testH264)
				}, source: "cam", video: "c-v"},
				{do: func(w *followWorld) { w.publish("radio", "r-v", testH264) }, source: "radio", video: "r-v", audio: "r-a"},
				{do: func(w *followWorld) { w.unpublish("r-v") }, source: "cam", video: "c-v"},
			},
			wantSwitches: 2,
		},
		{
			name: "a named identity is followed across its reconnects",
			sel:  Selector{Identity: "cam"},
			legs: []Leg{anyVideo},
			steps: []followStep{
				{do: func(w *followWorld) {
					w.join("other")
					w.publish("other", "o-v", testH264)
				}},
				{do: func(w *followWorld) {
					w.join("cam")
					w.publish("cam", "v1", testH264)
				}, source: "cam", video: "v1"},
				{do: func(w *followWorld) { w.leave("cam") }},
				{do: func(w *followWorld) {
					w.join("cam")
					w.publish("cam", "v2", testH264)
				}, source: "cam", video: "v2"},
			},
			wantSwitches: 1,
		},
		{
			name: "an ended track is skipped for the next live one",
			legs: []Leg{anyVideo},
			steps: []followStep{
				{do: func(w *followWorld) {
					w.join("a")
					w.publish("a", "screen", testH264)
					w.publish("a", "camera", testH264)
				}, source: "a", video: "screen"},
				{do: func(w *followWorld) { w.unpublish("screen") }, source: "a", video: "camera"},
			},
			wantSwitches: 1,
		},
		{
			name: "selection by source",
			sel:  Selector{Source: SourceScreen},
			legs: []Leg{anyVideo},
			steps: []followStep{
				{do: func(w *followWorld) {
					w.join("a")
					w.publish("a", "cam", testH264)
					tr, _ := w.pubs["a"].Publish(TrackSpec{Codec: testH264, Name: "screen", Source: SourceScreen})
					w.tracks["screen"] = tr
				}, source: "a", video: "screen"},
			},
		},
		{
			name: "a codec the reader does not take is converted, and the conversion follows the source",
			legs: []Leg{{Kind: KindAudio, Takes: takes(CodecOpus), Convert: convertTo(CodecOpus)}},
			steps: []followStep{
				{do: publisher("a", testAAC), source: "a", audio: "a-aac>opus"},
				{do: func(w *followWorld) {
					publisher("b", testOpus)(w)
					w.leave("a")
				}, source: "b", audio: "b-opus"},
			},
			wantSwitches:  1,
			wantConverted: 1,
		},
		{
			name: "a codec that cannot be converted is a problem, reported once",
			legs: []Leg{anyVideo, {Kind: KindAudio, Takes: takes(CodecOpus)}},
			steps: []followStep{
				{do: publisher("a", testAAC), source: "a", video: "a-v", problem: CodeCodecNotSupported},
				{do: func(w *followWorld) { w.join("viewer2") }, source: "a", video: "a-v"},
			},
		},
		{
			name:         "without a transcoder the conversion is a problem",
			legs:         []Leg{{Kind: KindAudio, Takes: takes(CodecOpus), Convert: convertTo(CodecOpus)}},
			noTranscoder: true,
			steps: []followStep{
				{do: publisher("a", testAAC), source: "a", problem: CodeTranscoderUnavailable},
			},
		},
		{
			name: "a conversion whose output the reader does not take either is a problem",
			legs: []Leg{{Kind: KindAudio, Takes: takes(CodecOpus), Convert: convertTo("refuse")}},
			steps: []followStep{
				{do: publisher("a", testAAC), source: "a", problem: CodeCodecNotSupported},
			},
		},
		{
			name: "a transcoder that stops leaves the leg idle until the source changes",
			legs: []Leg{{Kind: KindAudio, Takes: takes(CodecOpus), Convert: convertTo(CodecOpus)}},
			steps: []followStep{
				{do: publisher("a", testAAC), source: "a", audio: "a-aac>opus"},
				{do: func(w *followWorld) { w.tc.stop("a-aac>opus") }, source: "a", problem: CodeTranscoderFailed},
				{do: func(w *followWorld) { w.join("viewer2") }, source: "a"},
				{do: func(w *followWorld) { w.publish("a", "a-aac2", testAAC); w.unpublish("a-aac") }, source: "a", audio: "a-aac2>opus"},
			},
			wantSwitches:  1,
			wantConverted: 2,
		},
		{
			name:   "a new source missing a track is given the settle time",
			legs:   []Leg{anyVideo, anyAudio},
			settle: 2 * time.Second,
			steps: []followStep{
				{do: func(w *followWorld) {
					w.join("a")
					w.publish("a", "a-v", testH264)
				}, recheck: true},
				{do: func(w *followWorld) { w.publish("a", "a-opus", testOpus) }, source: "a", video: "a-v", audio: "a-opus"},
				{do: func(w *followWorld) { w.leave("a") }},
				{do: func(w *followWorld) {
					w.join("b")
					w.publish("b", "b-v", testH264)
				}, recheck: true},
				{do: func(w *followWorld) { w.now = w.now.Add(3 * time.Second) }, quiet: true, source: "b", video: "b-v"},
			},
			wantSwitches: 1,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			defer test.CheckRoutines(t)()
			w := &followWorld{t: t, now: time.Unix(1_000_000, 0), pubs: map[string]*Participant{}, tracks: map[string]*Track{},
				tc: &followTranscoder{ends: map[string]func(){}}}
			h, err := NewHub(Options{Config: DefaultConfig(), Clock: func() time.Time { return w.now }}) // one goroutine
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			w.h = h
			if !tc.noTranscoder {
				h.SetTranscoder(w.tc)
			}
			viewer, err := h.Join("room", ParticipantSpec{Identity: "viewer"})
			if err != nil {
				t.Fatal(err)
			}
			switches := 0
			legs := append([]Leg(nil), tc.legs...)
			for i := range legs {
				legs[i].Sink = &collectSink{}
				subscribed := false
				legs[i].Switched = func(*Track) {
					if subscribed {
						switches++
					}
					subscribed = true
				}
			}
			f := NewFollower(h, FollowerSpec{Room: "room", Select: tc.sel, Legs: legs, Subscriber: viewer, Settle: tc.settle})
			for i, st := range tc.steps {
				changed := f.Changed()
				st.do(w)
				select {
				case <-changed:
				default:
					if !st.quiet {
						t.Fatalf("step %d: no change signalled", i)
					}
				}
				problems := f.Update()
				if (f.Recheck() != nil) != st.recheck {
					t.Fatalf("step %d: recheck %v", i, f.Recheck() != nil)
				}
				got := ""
				if f.Source() != nil {
					got = f.Source().Identity()
				}
				if got != st.source {
					t.Fatalf("step %d: source %q, want %q", i, got, st.source)
				}
				for _, l := range []struct {
					kind Kind
					want string
				}{{KindVideo, st.video}, {KindAudio, st.audio}} {
					name := ""
					if tr := f.Track(l.kind); tr != nil {
						name = tr.spec.Name
					}
					if name != l.want {
						t.Fatalf("step %d: %s reads %q, want %q", i, l.kind, name, l.want)
					}
					if sub := f.Subscription(l.kind); (sub != nil) != (l.want != "") || (sub != nil && sub.Track() != f.Track(l.kind)) {
						t.Fatalf("step %d: %s subscription %v for %q", i, l.kind, sub, l.want)
					}
				}
				code := ""
				if len(problems) > 0 {
					code = problems[0].Code
				}
				if code != st.problem {
					t.Fatalf("step %d: problems %+v, want %q", i, problems, st.problem)
				}
			}
			if switches != tc.wantSwitches {
				t.Errorf("%d switches, want %d", switches, tc.wantSwitches)
			}
			f.Close()
			w.tc.mu.Lock()
			defer w.tc.mu.Unlock()
			if w.tc.acquired != tc.wantConverted || w.tc.released != w.tc.acquired || len(w.tc.misplaced) > 0 {
				t.Errorf("conversions: %d started (want %d), %d released; %v", w.tc.acquired, tc.wantConverted, w.tc.released, w.tc.misplaced)
			}
			if subs := viewer.Subscriptions(); len(subs) != 0 {
				t.Errorf("%d subscriptions left after Close", len(subs))
			}
		})
	}
}

// The hub-wide signal reports a change in any of many rooms, including rooms made after it
// was taken and rooms that end, so that one channel serves a watcher of every room.
func TestHubChangedCoversEveryRoom(t *testing.T) {
	defer test.CheckRoutines(t)()
	h, _ := newTestHub(t, DefaultConfig())
	defer h.Close()
	const rooms = 50
	pubs := make([]*Participant, rooms)
	for i := range pubs {
		p, err := h.Join(fmt.Sprintf("room-%d", i), ParticipantSpec{Identity: "pub"})
		if err != nil {
			t.Fatal(err)
		}
		pubs[i] = p
	}
	signalled := func(what string, change func()) {
		t.Helper()
		ch := h.Changed()
		select {
		case <-ch:
			t.Fatalf("%s: signalled before the change", what)
		default:
		}
		change()
		select {
		case <-ch:
		default:
			t.Fatalf("%s: not signalled", what)
		}
	}
	for i := 0; i < rooms; i += 7 {
		signalled(fmt.Sprintf("publish in room %d", i), func() { _, _ = pubs[i].Publish(TrackSpec{Codec: testH264}) })
	}
	signalled("a new room", func() { _, _ = h.Join("late", ParticipantSpec{Identity: "x"}) })
	signalled("a participant leaves", func() { pubs[rooms-1].Close(ReasonClientDisconnected, nil) })
	signalled("a room is deleted", func() { _ = h.DeleteRoom("room-3") })

	// Followers of different rooms wait on the same signal.
	f1 := NewFollower(h, FollowerSpec{Room: "room-10", Legs: []Leg{{Kind: KindVideo}}})
	f2 := NewFollower(h, FollowerSpec{Room: "nowhere", Legs: []Leg{{Kind: KindVideo}}})
	if f1.Changed() != f2.Changed() {
		t.Fatal("followers of two rooms wait on different channels")
	}
	ch := f2.Changed()
	f2.Update()
	pub, _ := h.Join("nowhere", ParticipantSpec{Identity: "cam"})
	v, _ := pub.Publish(TrackSpec{Codec: testH264})
	<-ch
	f2.Update()
	if f2.Track(KindVideo) != v {
		t.Fatal("the follower of a room made later did not find its publisher")
	}
	f1.Close()
	f2.Close()
}

// Selector picks tracks by kind, source and SID and never an ended one; with no identity it
// takes every publisher (Publishers) or the main publisher (Participant).
func TestSelector(t *testing.T) {
	h, _ := newTestHub(t, DefaultConfig())
	defer h.Close()
	a, _ := h.Join("r", ParticipantSpec{Identity: "a"})
	mic, _ := a.Publish(TrackSpec{Codec: testOpus, Source: SourceMicrophone})
	b, _ := h.Join("r", ParticipantSpec{Identity: "b"})
	cam, _ := b.Publish(TrackSpec{Codec: testH264, Source: SourceCamera})
	screen, _ := b.Publish(TrackSpec{Codec: testH264, Source: SourceScreen})
	r := h.Room("r")
	cases := []struct {
		sel          Selector
		participant  *Participant
		publishers   int
		tracksOfB    []*Track
		matchesOfMic bool
	}{
		{Selector{}, b, 2, []*Track{cam, screen}, true},
		{Selector{Identity: "a"}, a, 1, []*Track{cam, screen}, true},
		{Selector{Kind: KindVideo}, b, 1, []*Track{cam, screen}, false},
		{Selector{Source: SourceScreen}, b, 1, []*Track{screen}, false},
		{Selector{SID: mic.SID()}, b, 1, nil, true},
		{Selector{Identity: "nobody"}, nil, 0, []*Track{cam, screen}, true},
	}
	for i, c := range cases {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			if got := c.sel.Participant(r); got != c.participant {
				t.Errorf("participant %v", got)
			}
			if got := c.sel.Publishers(r); len(got) != c.publishers {
				t.Errorf("%d publishers", len(got))
			}
			if got := c.sel.Tracks(b); fmt.Sprint(got) != fmt.Sprint(c.tracksOfB) {
				t.Errorf("tracks of b %v", got)
			}
			if got := c.sel.Matches(mic); got != c.matchesOfMic {
				t.Errorf("matches the microphone: %v", got)
			}
		})
	}
	_ = b.Unpublish(cam, "")
	if (Selector{}).Matches(cam) {
		t.Fatal("an ended track matches")
	}
	if (Selector{}).Participant(nil) != nil {
		t.Fatal("a participant of no room")
	}
}

// Play follows for a play session: a source the reader cannot read ends it with
// source_changed (stream.stopped, track.subscription_failed naming the track); the end of the
// context ends it quietly.
func TestFollowerPlay(t *testing.T) {
	defer test.CheckRoutines(t)()
	h, em := newTestHub(t, DefaultConfig())
	defer h.Close()
	a, _ := h.Join("room", ParticipantSpec{Identity: "a"})
	_, _ = a.Publish(TrackSpec{Codec: testH264})
	viewer, _ := h.Join("room", ParticipantSpec{Identity: "viewer"})
	f := NewFollower(h, FollowerSpec{Room: "room", Subscriber: viewer,
		Legs: []Leg{{Kind: KindVideo, Takes: takes(CodecH264), Sink: &collectSink{}}}})
	defer f.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ended := make(chan string)
	go func() { ended <- f.Play(ctx, StreamSpec{Direction: DirectionPlay, Protocol: ProtocolWHEP}) }()
	waitFor(t, "the subscription", func() bool { return len(viewer.Subscriptions()) == 1 })

	b, _ := h.Join("room", ParticipantSpec{Identity: "b"})
	vp8, _ := b.Publish(TrackSpec{Codec: Codec{Name: CodecVP8, ClockRate: 90000}})
	a.Close(ReasonClientDisconnected, nil)
	if reason := <-ended; reason != ReasonSourceChanged {
		t.Fatalf("play ended with %q", reason)
	}
	var failed, stopped bool
	for _, e := range em.Events(0) {
		failed = failed || (e.Type == EventTrackSubscriptionFailed && e.Track.SID == vp8.SID() && e.Error.Code == CodeCodecNotSupported)
		stopped = stopped || (e.Type == EventStreamStopped && e.Reason == ReasonSourceChanged)
	}
	if !failed || !stopped {
		t.Fatalf("subscription_failed %v, stream.stopped source_changed %v", failed, stopped)
	}

	go func() { ended <- f.Play(ctx, StreamSpec{Direction: DirectionPlay, Protocol: ProtocolWHEP}) }()
	cancel()
	if reason := <-ended; reason != "" {
		t.Fatalf("play ended with %q when its context ended", reason)
	}
}
