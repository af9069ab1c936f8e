package egress

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// Backoff is the restart policy of a supervised worker: the delay before the first restart is
// Min, doubling after each failure up to Max, with ±20% jitter so that workers failing together
// do not retry together. A run that lasted Stable or longer counts as healthy: the next failure
// starts over from Min.
type Backoff struct {
	Min, Max time.Duration
	Stable   time.Duration
}

// DefaultBackoff restarts quickly once (a crash is usually one-off), then slows to every 10 s.
func DefaultBackoff() Backoff {
	return Backoff{Min: 200 * time.Millisecond, Max: 10 * time.Second, Stable: 10 * time.Second}
}

// Retry describes a failed run about to be restarted.
type Retry struct {
	// Attempt counts the failures since the last healthy run (1 for the first).
	Attempt int
	// Err is why the run ended.
	Err error
	// Ran is how long the run lasted; Delay is the wait before the next one.
	Ran, Delay time.Duration
}

// permanentError marks a failure that a retry cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as a failure that retrying cannot fix: Supervise returns it instead of
// restarting the worker.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// Supervise runs a worker until ctx ends, restarting it after each failure with b's backoff.
// run must return when its context ends; a run that returns nil has finished its work and ends
// the supervision, as does a Permanent error, which Supervise returns. onRetry, when not nil,
// is called (on the supervising goroutine) before each wait, to log and count the restart.
// Supervise returns nil when ctx ends.
func Supervise(ctx context.Context, run func(ctx context.Context) error, b Backoff, onRetry func(Retry)) error {
	if b.Min <= 0 {
		b.Min = DefaultBackoff().Min
	}
	if b.Max < b.Min {
		b.Max = b.Min
	}
	attempt := 0
	delay := b.Min
	for {
		started := time.Now()
		err := run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			return nil
		}
		if IsPermanent(err) {
			return err
		}
		ran := time.Since(started)
		if b.Stable > 0 && ran >= b.Stable {
			attempt, delay = 0, b.Min
		}
		attempt++
		wait := jitter(delay)
		if onRetry != nil {
			onRetry(Retry{Attempt: attempt, Err: err, Ran: ran, Delay: wait})
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		}
		delay = min(delay*2, b.Max)
	}
}

// jitter spreads d by ±20%.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64())) //nolint:gosec // timing jitter, not a secret
}
