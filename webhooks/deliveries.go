package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-media/sluice/sfu"
)

// Delivery statuses.
const (
	StatusDelivered = "delivered"
	StatusRetrying  = "retrying"
	StatusFailed    = "failed"
	StatusGone      = "gone" // the endpoint answered 410 and was disabled
)

// deliverySubjectPrefix + endpoint key holds an endpoint's delivery records.
const deliverySubjectPrefix = "sluice.dlv."

// Delivery is the record of one attempt (or the last attempt) to deliver one event to one
// endpoint; GET /v1/webhooks/{id}/deliveries lists the latest record of each event.
type Delivery struct {
	Endpoint   string     `json:"endpoint"`
	Seq        uint64     `json:"seq"`
	EventID    string     `json:"event_id"`
	Type       string     `json:"type"`
	Room       string     `json:"room,omitempty"`
	Status     string     `json:"status"`
	Attempts   int        `json:"attempts"`
	StatusCode int        `json:"status_code,omitempty"`
	Error      string     `json:"error,omitempty"`
	At         time.Time  `json:"at"`
	NextAt     *time.Time `json:"next_at,omitempty"`
	DurationMs float64    `json:"duration_ms"`
	Replay     bool       `json:"replay,omitempty"`
}

// record appends a delivery record without waiting for its ack (records are diagnostics: the
// delivery's durable state is the endpoint's cursor).
func (d *Deliverer) record(rec Delivery) {
	result := map[string]string{StatusDelivered: "delivered", StatusRetrying: "retry", StatusFailed: "failed"}[rec.Status]
	if result != "" {
		d.attempts.WithLabelValues(rec.Endpoint, result).Inc()
	}
	raw, err := json.Marshal(rec)
	if err != nil {
		return
	}
	if _, err := d.events.js.PublishAsync(deliverySubjectPrefix+kvKey(rec.Endpoint), raw); err != nil {
		d.log.Debug("webhooks: delivery record not stored", "err", err)
	}
}

// DeliveryQuery selects delivery records.
type DeliveryQuery struct {
	// Since: records at or after; zero means the last hour, or the last MaxAge with a Status.
	Since time.Time
	// Status keeps the events whose last record has this status ("failed"); "" keeps all.
	Status string
	Limit  int // newest records kept (default 100)
}

// Deliveries returns the latest record of each event delivered to an endpoint since q.Since,
// oldest first, at most q.Limit (the newest). Memory is bounded: without a status it keeps a
// window of the newest records; with one, only the events not (yet) delivered.
func (d *Deliverer) Deliveries(ctx context.Context, id string, q DeliveryQuery) ([]Delivery, error) {
	if err := d.waitReady(ctx); err != nil {
		return nil, err
	}
	if _, err := d.Endpoint(id); err != nil {
		return nil, err
	}
	if q.Since.IsZero() {
		q.Since = d.clock().Add(-time.Hour)
		if q.Status != "" {
			q.Since = d.clock().Add(-d.cfg.MaxAge)
		}
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	latest := map[uint64]Delivery{}
	var ring []Delivery // without a status: the newest records, in arrival order
	err := scanStream(ctx, d.events.js, streamDeliveries, deliverySubjectPrefix+kvKey(id), 0, q.Since, false, func(m jetstream.Msg) error {
		var rec Delivery
		if json.Unmarshal(m.Data(), &rec) != nil {
			return nil
		}
		switch {
		case q.Status == "":
			ring = append(ring, rec)
			if len(ring) > 4*q.Limit {
				ring = append(ring[:0:0], ring[len(ring)-2*q.Limit:]...)
			}
		case rec.Status == StatusDelivered:
			delete(latest, rec.Seq)
		default:
			latest[rec.Seq] = rec
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, rec := range ring {
		latest[rec.Seq] = rec
	}
	out := make([]Delivery, 0, len(latest))
	for _, rec := range latest {
		if q.Status == "" || rec.Status == q.Status {
			out = append(out, rec)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	if len(out) > q.Limit {
		out = out[len(out)-q.Limit:]
	}
	return out, nil
}

// ReplayRequest is the body of POST /v1/webhooks/{id}/replay.
type ReplayRequest struct {
	// Since is "SEQ" (events after it) or a duration ("2h": events of the last two hours).
	Since string `json:"since"`
	// All replays every event for the endpoint since then, not only the failed ones.
	All bool `json:"all,omitempty"`
}

// ReplayResult is the answer of a replay.
type ReplayResult struct {
	Queued  int  `json:"queued"`
	Enabled bool `json:"enabled,omitempty"`
}

// Replay resends to an endpoint the events since a point: those whose delivery failed, or all
// of them. It enables a disabled endpoint again. The resends run in the background, one attempt
// each, in seq order; their records carry replay: true.
func (d *Deliverer) Replay(ctx context.Context, id string, req ReplayRequest) (ReplayResult, error) {
	if err := d.waitReady(ctx); err != nil {
		return ReplayResult{}, err
	}
	ep, err := d.Endpoint(id)
	if err != nil {
		return ReplayResult{}, err
	}
	after, since, err := ParseSince(req.Since, d.clock())
	if err != nil {
		return ReplayResult{}, err
	}
	var seqs []uint64
	if req.All {
		err = d.events.Read(ctx, Query{After: after, Since: since}, func(r Record) error {
			if ep.Matches(r.Type, r.Room) {
				seqs = append(seqs, r.Seq)
			}
			return nil
		})
	} else {
		from := since
		if after > 0 || from.IsZero() {
			from = d.clock().Add(-d.events.opts.Config.Retention)
		}
		var failed []Delivery
		failed, err = d.Deliveries(ctx, id, DeliveryQuery{Since: from, Status: StatusFailed, Limit: 1 << 30})
		for _, rec := range failed {
			if rec.Seq > after && (since.IsZero() || !rec.At.Before(since)) {
				seqs = append(seqs, rec.Seq)
			}
		}
	}
	if err != nil {
		return ReplayResult{}, err
	}
	res := ReplayResult{Queued: len(seqs), Enabled: ep.Disabled}
	if ep.Disabled {
		if err := d.enable(ctx, id); err != nil {
			return ReplayResult{}, err
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.runCtx == nil || d.runCtx.Err() != nil {
		return ReplayResult{}, errors.New("webhooks: the daemon is not delivering (starting or stopping)")
	}
	se := d.endpoints[id]
	signer, err := NewSigner(se.Secret)
	if err != nil {
		return ReplayResult{}, err
	}
	epCopy := se.Endpoint
	rctx := d.runCtx
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.replay(rctx, &epCopy, signer, seqs)
	}()
	return res, nil
}

func (d *Deliverer) replay(ctx context.Context, ep *Endpoint, signer *Signer, seqs []uint64) {
	for _, seq := range seqs {
		m, err := d.events.stream.GetMsg(ctx, seq)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d.log.Warn("webhooks: replay: event no longer in the log", "endpoint", ep.ID, "seq", seq, "err", err)
			continue
		}
		room, typ, _ := parseSubject(m.Subject)
		id := m.Header.Get(jetstream.MsgIDHeader)
		res := d.post(ctx, ep, signer, id, withSeq(m.Data, seq))
		if ctx.Err() != nil {
			return
		}
		rec := Delivery{Endpoint: ep.ID, Seq: seq, EventID: id, Type: typ, Room: room, Attempts: 1, Replay: true,
			StatusCode: res.code, Error: res.errText(), At: d.clock().UTC(), DurationMs: float64(res.duration.Microseconds()) / 1000, Status: StatusDelivered}
		if !res.ok() {
			rec.Status = StatusFailed
		}
		d.record(rec)
	}
}

// TestResult is the answer of POST /v1/webhooks/{id}/test.
type TestResult struct {
	EventID    string  `json:"event_id"`
	StatusCode int     `json:"status_code,omitempty"`
	Error      string  `json:"error,omitempty"`
	DurationMs float64 `json:"duration_ms"`
	OK         bool    `json:"ok"`
}

// TestEventType is the type of the signed test event POST /v1/webhooks/{id}/test sends; it is
// not part of the log.
const TestEventType = "webhook.test"

// Test sends one signed test event to an endpoint and reports the answer.
func (d *Deliverer) Test(ctx context.Context, id string) (TestResult, error) {
	if err := d.waitReady(ctx); err != nil {
		return TestResult{}, err
	}
	d.mu.Lock()
	se := d.endpoints[id]
	var ep Endpoint
	var secret string
	if se != nil {
		ep, secret = se.Endpoint, se.Secret
	}
	d.mu.Unlock()
	if se == nil {
		return TestResult{}, fmt.Errorf("%w: %s", ErrEndpointNotFound, id)
	}
	signer, err := NewSigner(secret)
	if err != nil {
		return TestResult{}, err
	}
	ev := &sfu.Event{ID: sfu.NewID("evt_test_"), Type: TestEventType, Time: d.clock().UTC()}
	body, err := json.Marshal(ev)
	if err != nil {
		return TestResult{}, err
	}
	res := d.post(ctx, &ep, signer, ev.ID, body)
	return TestResult{EventID: ev.ID, StatusCode: res.code, Error: res.errText(), OK: res.ok(), DurationMs: float64(res.duration.Microseconds()) / 1000}, nil
}

// ParseSince reads a "since" value: a seq ("1042": after it), or a duration ("10m": from that
// long ago). "" means neither.
func ParseSince(s string, now time.Time) (after uint64, since time.Time, err error) {
	if s == "" {
		return 0, time.Time{}, nil
	}
	var n uint64
	if _, err := fmt.Sscanf(s, "%d", &n); err == nil && fmt.Sprint(n) == s {
		return n, time.Time{}, nil
	}
	dur, err := time.ParseDuration(s)
	if err != nil || dur < 0 {
		return 0, time.Time{}, fmt.Errorf("since: %q is neither a seq nor a duration such as 10m", s)
	}
	return 0, now.Add(-dur), nil
}
