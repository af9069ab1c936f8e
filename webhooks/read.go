package webhooks

import (
	"context"
	"errors"
	"fmt"
	"path"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Query selects events of the log.
type Query struct {
	// After starts after this seq (0: from the start, unless Since is set).
	After uint64
	// Since starts at events stored at or after this time (used when After is 0).
	Since time.Time
	// Types are type globs (path.Match syntax, "recording.*"); empty matches every type.
	Types []string
	// Room keeps the events of this room only ("" keeps every event).
	Room string
}

// Match reports whether a record passes the query's filters.
func (q Query) Match(typ, room string) bool {
	if q.Room != "" && room != q.Room {
		return false
	}
	return matchAny(q.Types, typ, true)
}

// matchAny reports whether s matches one of the globs; an empty list matches when empty is true.
func matchAny(globs []string, s string, empty bool) bool {
	if len(globs) == 0 {
		return empty
	}
	for _, g := range globs {
		if ok, _ := path.Match(g, s); ok {
			return true
		}
	}
	return false
}

// errStop ends a scan from inside its callback without an error.
var errStop = errors.New("stop")

// Read calls fn for every stored event matching q, in seq order, up to the newest event at the
// time of the call; fn returning an error stops the scan (ErrStop quietly).
func (l *Log) Read(ctx context.Context, q Query, fn func(Record) error) error {
	return l.scan(ctx, q, false, fn)
}

// Follow is Read that goes on with new events until ctx ends or fn returns an error.
func (l *Log) Follow(ctx context.Context, q Query, fn func(Record) error) error {
	return l.scan(ctx, q, true, fn)
}

// ErrStop may be returned by a Read or Follow callback to end the scan without an error.
var ErrStop = errStop

func (l *Log) scan(ctx context.Context, q Query, follow bool, fn func(Record) error) error {
	filter := ""
	if q.Room != "" {
		filter = roomSubject(q.Room)
	}
	return scanStream(ctx, l.js, streamEvents, filter, q.After, q.Since, follow, func(m jetstream.Msg) error {
		rec, err := recordOf(m)
		if err != nil {
			return err
		}
		if !q.Match(rec.Type, rec.Room) {
			return nil
		}
		return fn(rec)
	})
}

// scanStream reads a stream (optionally one subject filter) with an ordered consumer
// (flow-controlled, ephemeral, recreated by the client after any gap) from after seq, or from
// since, or from the start; without follow it stops once caught up.
func scanStream(ctx context.Context, js jetstream.JetStream, stream, filter string, after uint64, since time.Time, follow bool, fn func(jetstream.Msg) error) error {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy, InactiveThreshold: 10 * time.Second}
	if filter != "" {
		cfg.FilterSubjects = []string{filter}
	}
	switch {
	case after > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, after+1
	case !since.IsZero():
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, err := js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return fmt.Errorf("events: reading the log: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(128))
	if err != nil {
		return fmt.Errorf("events: reading the log: %w", err)
	}
	defer func() {
		it.Stop()
		// the server would keep an idle ephemeral consumer for InactiveThreshold: drop it now
		if info := cons.CachedInfo(); info != nil {
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = js.DeleteConsumer(dctx, stream, info.Name)
			cancel()
		}
	}()
	if !follow {
		info, err := cons.Info(ctx)
		if err != nil {
			return fmt.Errorf("events: reading the log: %w", err)
		}
		if info.NumPending == 0 && info.Delivered.Consumer == 0 {
			return nil
		}
	}
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("events: reading the log: %w", err)
		}
		if err := fn(m); err != nil {
			if errors.Is(err, errStop) {
				return nil
			}
			return err
		}
		if !follow {
			meta, err := m.Metadata()
			if err == nil && meta.NumPending == 0 {
				return nil
			}
		}
	}
}
