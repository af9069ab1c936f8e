package egress

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestSuperviseRestartsWithBackoff(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	boom := errors.New("boom")
	runs := 0
	var retries []Retry
	b := Backoff{Min: time.Millisecond, Max: 4 * time.Millisecond}
	err := Supervise(ctx, func(context.Context) error {
		runs++
		if runs == 5 {
			return nil // done
		}
		return boom
	}, b, func(r Retry) { retries = append(retries, r) })
	if err != nil || runs != 5 || len(retries) != 4 {
		t.Fatalf("err %v, %d runs, %d retries", err, runs, len(retries))
	}
	for i, r := range retries {
		if r.Attempt != i+1 || !errors.Is(r.Err, boom) {
			t.Fatalf("retry %d: %+v", i, r)
		}
		want := min(time.Millisecond<<i, 4*time.Millisecond)
		if r.Delay < want*8/10 || r.Delay > want*12/10 {
			t.Errorf("retry %d waited %v, want %v ±20%%", i, r.Delay, want)
		}
	}
}

func TestSupervisePermanentAndCancel(t *testing.T) {
	fatal := Permanent(errors.New("bad key"))
	err := Supervise(context.Background(), func(context.Context) error { return fatal }, DefaultBackoff(), nil)
	if !IsPermanent(err) || err.Error() != "bad key" {
		t.Fatalf("permanent: %v", err)
	}
	if Permanent(nil) != nil {
		t.Fatal("Permanent(nil) is not nil")
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- Supervise(ctx, func(ctx context.Context) error {
			return errors.New("crash")
		}, Backoff{Min: time.Hour}, nil)
	}()
	cancel() // ends the wait before the next restart
	if err := <-done; err != nil {
		t.Fatalf("cancelled supervision: %v", err)
	}
}

// A run that lasted Stable resets the backoff to Min.
func TestSuperviseStableRunResets(t *testing.T) {
	runs := 0
	var delays []time.Duration
	b := Backoff{Min: time.Millisecond, Max: time.Second, Stable: 20 * time.Millisecond}
	_ = Supervise(context.Background(), func(context.Context) error {
		runs++
		switch runs {
		case 4:
			time.Sleep(25 * time.Millisecond) // a healthy run
		case 6:
			return nil
		}
		return errors.New("crash")
	}, b, func(r Retry) { delays = append(delays, r.Delay) })
	if len(delays) != 5 || delays[3] > 2*time.Millisecond || delays[2] < 3*time.Millisecond {
		t.Fatalf("delays %v: the healthy fourth run should reset the backoff", delays)
	}
}
