package sfu

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Selector names what a reader takes from a room: a participant and some of its tracks. Its
// zero value takes every track of the room's main publisher.
type Selector struct {
	// Identity names the participant; "" is the main publisher for Participant and everyone
	// for Publishers.
	Identity string
	Kind     Kind   // "" for any kind
	Source   string // "" for any source (camera, screen, …)
	SID      string // "" for any track
}

// Participant returns the participant s follows in r: the named one, else the main
// publisher; nil when there is none (or r is nil).
func (s Selector) Participant(r *Room) *Participant {
	switch {
	case r == nil:
		return nil
	case s.Identity != "":
		return r.Participant(s.Identity)
	}
	return r.MainPublisher()
}

// Publishers returns the participants of r that have a track s takes: the named one, or with no
// Identity every one, in join order.
func (s Selector) Publishers(r *Room) []*Participant {
	var out []*Participant
	for _, p := range r.Participants() {
		if (s.Identity == "" || p.Identity() == s.Identity) && len(s.Tracks(p)) > 0 {
			out = append(out, p)
		}
	}
	return out
}

// Matches reports whether s takes t: a live track of the kind, source and SID asked for.
func (s Selector) Matches(t *Track) bool {
	return !t.Closed() && (s.Kind == "" || t.Kind() == s.Kind) && (s.Source == "" || t.Source() == s.Source) &&
		(s.SID == "" || t.SID() == s.SID)
}

// Tracks returns the tracks of p that s takes, in publication order (none for a nil p).
func (s Selector) Tracks(p *Participant) []*Track {
	if p == nil {
		return nil
	}
	var out []*Track
	for _, t := range p.Tracks() {
		if s.Matches(t) {
			out = append(out, t)
		}
	}
	return out
}

// first returns the first track of p that s takes with kind k, or nil.
func (s Selector) first(p *Participant, k Kind) *Track {
	s.Kind = k
	if ts := s.Tracks(p); len(ts) > 0 {
		return ts[0]
	}
	return nil
}

// Leg is one track a Follower reads: the source's first track of Kind.
type Leg struct {
	Kind Kind
	// Takes reports whether the reader takes a track in codec c as it is (nil takes any). A
	// conversion's output must pass it too.
	Takes func(c Codec) bool
	// Convert names the codec a track Takes refuses is converted to through the hub's
	// transcoder; nil, or "", when the reader cannot read such a track.
	Convert func(c Codec) string
	// Sink, when set, gets the leg's packets: Update keeps one subscription to its track.
	Sink Sink
	// Switched is called by Update before each subscription of Sink starts, with the published
	// track it reads (through its conversion, if any); first is true for the leg's first one.
	Switched func(src *Track, first bool)
}

// Leg problem codes (the error code of track.subscription_failed).
const (
	CodeCodecNotSupported     = "codec_not_supported"
	CodeTranscoderUnavailable = "transcoder_unavailable"
	CodeTranscoderFailed      = "transcoder_failed"
)

// LegError is why a leg cannot read its source's track. The leg stays idle until that track
// changes.
type LegError struct {
	Kind  Kind
	Track *Track // the published track
	Code  string // a Code* constant
	Err   error
}

func (e *LegError) Error() string { return e.Err.Error() }
func (e *LegError) Unwrap() error { return e.Err }

// FollowerSpec describes what a Follower follows and on whose behalf.
type FollowerSpec struct {
	Room   string
	Select Selector
	Legs   []Leg
	// Subscriber, when set, makes the legs' subscriptions as this participant (with its
	// track.subscribed events); else they subscribe to the tracks directly.
	Subscriber *Participant
	// Settle, when positive, is how long a new source missing the track of a leg may take to
	// publish it before the follower switches to it anyway (publishers announce tracks one by
	// one); Recheck fires when it is over.
	Settle time.Duration
	// OnChange is called by Update when the source or a leg's track changed, after the legs
	// point at their new tracks and before the conversions they replaced are released, with
	// the problems of this update. A reader that subscribes by itself switches there.
	OnChange func(problems []LegError)
}

// Follower keeps a reader on a room's source: the named participant across its reconnects, or
// the room's main publisher as it changes. For each leg it picks the source's first live track
// of the leg's kind, converts it through the hub's transcoder when the reader does not take its
// codec, and switches the leg's subscription when the track changes, so that the reader goes on
// without renegotiating. Readers: the WHEP viewer, RTSP play, broadcasts.
//
// Lifecycle: NewFollower starts nothing. The owner calls Changed, then Update, and waits on the
// channel it got (and on Recheck) before the next Update; Close ends the subscriptions and
// releases the conversions. Resolve, Drop, Update and Close must be called from one goroutine
// at a time; Subscription is safe from any goroutine. No lock is held while Update calls the
// hub, the transcoder or OnChange.
type Follower struct {
	hub     *Hub
	spec    FollowerSpec
	legs    []*leg
	source  *Participant
	recheck <-chan time.Time
}

// leg is the state of one Leg, owned by the Follower's caller (sub is read by any goroutine).
type leg struct {
	Leg
	src     *Track // the published track the leg is on
	read    *Track // what it reads: src or its conversion (nil while idle)
	release func() // gives the conversion back
	failed  *Track // a src the leg cannot read: not retried until the track changes
	sub     atomic.Pointer[Subscription]
	had     bool
}

// NewFollower returns a follower of spec's source in h; it starts nothing.
func NewFollower(h *Hub, spec FollowerSpec) *Follower {
	f := &Follower{hub: h, spec: spec}
	for _, l := range spec.Legs {
		f.legs = append(f.legs, &leg{Leg: l})
	}
	return f
}

// Changed returns the hub-wide change signal (Hub.Changed): take it before Update, wait on it
// after.
func (f *Follower) Changed() <-chan struct{} { return f.hub.Changed() }

// Recheck returns a channel that fires when Update should run again although nothing changed
// (a new source's settle time is over), or nil.
func (f *Follower) Recheck() <-chan time.Time { return f.recheck }

// Source returns the participant the legs read from (nil when none has a track for them).
func (f *Follower) Source() *Participant { return f.source }

// Track returns what the leg of kind k reads (the published track or its conversion), or nil.
func (f *Follower) Track(k Kind) *Track {
	if l := f.leg(k); l != nil {
		return l.read
	}
	return nil
}

// Subscription returns the current subscription of the leg of kind k, or nil. Safe from any
// goroutine (to forward a keyframe request).
func (f *Follower) Subscription(k Kind) *Subscription {
	if l := f.leg(k); l != nil {
		return l.sub.Load()
	}
	return nil
}

func (f *Follower) leg(k Kind) *leg {
	for _, l := range f.legs {
		if l.Kind == k {
			return l
		}
	}
	return nil
}

// Resolve points the legs at the source's tracks, converting them as needed, without
// subscribing: for a reader that negotiates its tracks before reading them. It returns the
// legs that cannot read their track (Drop those the reader leaves out).
func (f *Follower) Resolve() []LegError { return f.update(false) }

// Update resolves the source and switches every leg to its current track; see Leg and
// FollowerSpec.OnChange. It returns the problems that appeared with this update.
func (f *Follower) Update() []LegError { return f.update(true) }

// Drop removes the leg of kind k, ending its subscription and releasing its conversion.
func (f *Follower) Drop(k Kind) {
	for i, l := range f.legs {
		if l.Kind == k {
			f.stop(l)
			f.legs = append(f.legs[:i:i], f.legs[i+1:]...)
			return
		}
	}
}

// Close ends every leg's subscription and releases the conversions. Idempotent.
func (f *Follower) Close() {
	for _, l := range f.legs {
		f.stop(l)
	}
}

func (f *Follower) stop(l *leg) {
	f.unsubscribe(l)
	if l.release != nil {
		l.release()
	}
	l.src, l.read, l.release = nil, nil, nil
}

func (f *Follower) unsubscribe(l *leg) {
	sub := l.sub.Swap(nil)
	switch {
	case sub == nil:
	case f.spec.Subscriber != nil:
		f.spec.Subscriber.Unsubscribe(sub)
	default:
		sub.Close()
	}
}

func (f *Follower) update(subscribe bool) []LegError {
	f.recheck = nil
	p := f.spec.Select.Participant(f.hub.Room(f.spec.Room))
	wants := make([]*Track, len(f.legs))
	missing, found := false, false
	for i, l := range f.legs {
		wants[i] = f.spec.Select.first(p, l.Kind)
		missing = missing || wants[i] == nil
		found = found || wants[i] != nil
	}
	if !found {
		p = nil
	}
	if f.spec.Settle > 0 && p != nil && p != f.source && missing {
		if wait := p.JoinedAt().Add(f.spec.Settle).Sub(f.hub.Now()); wait > 0 {
			f.recheck = time.After(wait)
			return nil
		}
	}
	changed := p != f.source
	f.source = p
	var problems []LegError
	var stale []func()
	for i, l := range f.legs {
		want := wants[i]
		if want == l.src && (want == nil || want == l.failed || l.settled(subscribe)) {
			continue
		}
		changed = true
		f.unsubscribe(l)
		if l.release != nil && (want != l.src || l.read.Closed()) {
			if want == l.src && !want.Closed() {
				// The transcoder stopped, not the source: do not start it again and again.
				l.failed = want
				problems = append(problems, LegError{Kind: l.Kind, Track: want, Code: CodeTranscoderFailed,
					Err: errors.New("the transcoder stopped converting this track")})
			}
			stale = append(stale, l.release)
			l.read, l.release = nil, nil
		}
		if want != l.src {
			l.read = nil
		}
		l.src = want
		if want == nil || want == l.failed {
			continue // wait for a source
		}
		if l.read == nil {
			if err := f.convert(l, want); err != nil {
				if !want.Closed() { // else the track ended meanwhile: the room change brings us back
					l.failed = want
					problems = append(problems, *err)
				}
				continue
			}
		}
		if !subscribe || l.Sink == nil {
			continue
		}
		if l.Switched != nil {
			l.Switched(want, !l.had)
		}
		var sub *Subscription
		var err error
		if f.spec.Subscriber != nil {
			sub, err = f.spec.Subscriber.Subscribe(l.read, l.Sink, SubscribeOptions{})
		} else {
			sub, err = l.read.Subscribe(l.Sink, SubscribeOptions{})
		}
		if err != nil {
			continue // the track ended meanwhile: the room change brings us back
		}
		l.sub.Store(sub)
		l.had = true
	}
	if changed && f.spec.OnChange != nil {
		f.spec.OnChange(problems)
	}
	for _, release := range stale {
		release()
	}
	return problems
}

// settled reports whether the leg reads its track (and, when subscribing, is subscribed to it).
func (l *leg) settled(subscribe bool) bool {
	if l.read == nil || l.read.Closed() {
		return false
	}
	if !subscribe || l.Sink == nil {
		return true
	}
	sub := l.sub.Load()
	return sub != nil && sub.Track() == l.read
}

// convert sets what the leg reads from src: src itself, or its conversion.
func (f *Follower) convert(l *leg, src *Track) *LegError {
	c := src.Codec()
	if l.Takes == nil || l.Takes(c) {
		l.read = src
		return nil
	}
	fail := func(code string, err error) *LegError {
		return &LegError{Kind: l.Kind, Track: src, Code: code, Err: err}
	}
	to := ""
	if l.Convert != nil {
		to = l.Convert(c)
	}
	if to == "" {
		return fail(CodeCodecNotSupported, fmt.Errorf("%s %s cannot be read here, nor converted", l.Kind, c.Name))
	}
	out, release, err := f.hub.Transcode(src, to)
	if err == nil && !l.Takes(out.Codec()) {
		release()
		err = fmt.Errorf("the transcoder makes %s/%d", out.Codec().Name, out.Codec().ClockRate)
	}
	if err != nil {
		code := CodeCodecNotSupported
		if errors.Is(err, ErrNoTranscoder) {
			code = CodeTranscoderUnavailable
		}
		return fail(code, fmt.Errorf("%s %s cannot be converted to %s: %w", l.Kind, c.Name, to, err))
	}
	l.read, l.release = out, release
	return nil
}
