package sfu

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
	// track it reads (through its conversion, if any): where a Munger switches.
	Switched func(src *Track)
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
	// Subscriber makes the subscriptions of the legs that have a Sink (with its
	// track.subscribed events); required for those.
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
// the room's main publisher as it changes. Each leg reads the source's first live track of its
// kind, converted through the hub's transcoder when the reader does not take its codec, and
// moves to the next track without the reader renegotiating. Readers: the WHEP viewer, RTSP
// play, broadcasts.
//
// Lifecycle: NewFollower starts nothing. Its owner takes Changed, calls Update, waits on the
// channel it took (and on Recheck), and so on (Play is that loop for a play session); Close
// ends the subscriptions and releases the conversions. Every method but Subscription (safe from any goroutine) is called by one
// goroutine at a time. No lock is held while Update calls the hub, the transcoder or OnChange.
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
}

// NewFollower returns a follower of spec's source in h; it starts nothing.
func NewFollower(h *Hub, spec FollowerSpec) *Follower {
	f := &Follower{hub: h, spec: spec}
	for _, l := range spec.Legs {
		f.legs = append(f.legs, &leg{Leg: l})
	}
	return f
}

// Changed returns the hub-wide change signal (Hub.Changed).
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

// Subscription returns the current subscription of the leg of kind k, or nil.
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

// Resolve points the legs at the source's tracks, converted as needed, without subscribing: for
// a reader that negotiates before it reads. The legs that read nothing are dropped for good;
// it returns the problems of those that could not read their track.
func (f *Follower) Resolve() []LegError {
	problems := f.update(false)
	f.legs = slices.DeleteFunc(f.legs, func(l *leg) bool { return l.read == nil })
	return problems
}

// Update switches every leg to the source's current track (see Leg and FollowerSpec.OnChange)
// and returns the problems that appeared with this update.
func (f *Follower) Update() []LegError { return f.update(true) }

// Play runs the play stream of the Subscriber (stream.started with spec), with an Update at
// every change (and when a new source's settle time is over), until ctx ends (it returns ""), the subscriber leaves (its leave reason) or a
// leg's new track cannot be read (ReasonSourceChanged, with which the stream ends). Problems are
// reported as track.subscription_failed; a stopped transcoder only idles its leg.
func (f *Follower) Play(ctx context.Context, spec StreamSpec) string {
	p := f.spec.Subscriber
	stream, err := p.StartStream(spec)
	if err != nil {
		return p.LeaveReason()
	}
	for {
		changed := f.Changed()
		for _, e := range f.Update() {
			p.SubscriptionFailed(e.Track, e.Code, e.Err)
			if e.Code != CodeTranscoderFailed {
				stream.End(ReasonSourceChanged, nil)
				return ReasonSourceChanged
			}
		}
		select {
		case <-changed:
		case <-f.Recheck(): // a new source's settle time is over
		case <-ctx.Done():
			return ""
		case <-p.Done():
			return p.LeaveReason()
		}
	}
}

// Close ends every leg's subscription and releases the conversions. Idempotent.
func (f *Follower) Close() {
	for _, l := range f.legs {
		f.unsubscribe(l)
		if l.release != nil {
			l.release()
		}
		l.src, l.read, l.release = nil, nil, nil
	}
}

func (f *Follower) unsubscribe(l *leg) {
	if sub := l.sub.Swap(nil); sub != nil {
		f.spec.Subscriber.Unsubscribe(sub)
	}
}

func (f *Follower) update(subscribe bool) []LegError {
	f.recheck = nil
	p := f.spec.Select.Participant(f.hub.Room(f.spec.Room))
	wants := make([]*Track, len(f.legs))
	missing, found := false, false
	for i, l := range f.legs {
		sel := f.spec.Select
		sel.Kind = l.Kind
		if ts := sel.Tracks(p); len(ts) > 0 {
			wants[i] = ts[0]
		}
		missing, found = missing || wants[i] == nil, found || wants[i] != nil
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
			if want == l.src && !want.Closed() { // the transcoder stopped, not the source
				l.failed = want
				problems = append(problems, LegError{Kind: l.Kind, Track: want, Code: CodeTranscoderFailed,
					Err: errors.New("the transcoder stopped converting this track")})
			}
			stale = append(stale, l.release)
			l.release = nil
		}
		if l.release == nil { // a conversion still running is kept
			l.read = nil
		}
		l.src = want
		if want == nil || want == l.failed {
			continue // wait for a source
		}
		if l.read == nil {
			if e := f.convert(l, want); e != nil {
				if !want.Closed() { // else it ended meanwhile: the room change brings us back
					l.failed = want
					problems = append(problems, *e)
				}
				continue
			}
		}
		if !subscribe || l.Sink == nil {
			continue
		}
		if l.Switched != nil {
			l.Switched(want)
		}
		sub, err := f.spec.Subscriber.Subscribe(l.read, l.Sink, SubscribeOptions{})
		if err != nil {
			continue // the track ended meanwhile: the room change brings us back
		}
		l.sub.Store(sub)
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
	sub := l.sub.Load()
	return !subscribe || l.Sink == nil || (sub != nil && sub.Track() == l.read)
}

// convert sets what the leg reads from src: src itself, or its conversion.
func (f *Follower) convert(l *leg, src *Track) *LegError {
	c := src.Codec()
	if l.Takes == nil || l.Takes(c) {
		l.read = src
		return nil
	}
	e := &LegError{Kind: l.Kind, Track: src, Code: CodeCodecNotSupported}
	to := ""
	if l.Convert != nil {
		to = l.Convert(c)
	}
	if to == "" {
		e.Err = fmt.Errorf("%s %s cannot be read here, nor converted", l.Kind, c.Name)
		return e
	}
	out, release, err := f.hub.Transcode(src, to)
	if err == nil && !l.Takes(out.Codec()) {
		release()
		err = fmt.Errorf("the transcoder makes %s/%d", out.Codec().Name, out.Codec().ClockRate)
	}
	if err != nil {
		if errors.Is(err, ErrNoTranscoder) {
			e.Code = CodeTranscoderUnavailable
		}
		e.Err = fmt.Errorf("%s %s cannot be converted to %s: %w", l.Kind, c.Name, to, err)
		return e
	}
	l.read, l.release = out, release
	return nil
}
