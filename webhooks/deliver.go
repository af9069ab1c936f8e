package webhooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DeliveryOptions build a Deliverer.
type DeliveryOptions struct {
	Config Config
	Log    *Log
	Logger *slog.Logger
	// Clock returns the current time; time.Now when nil.
	Clock func() time.Time
	// UserAgent is sent with every delivery.
	UserAgent string
	// LaneLimit bounds the events one room's lane holds in memory per endpoint (default 256);
	// past it the lane reads that room's later events back from the log when it has caught up.
	LaneLimit int
	// Concurrency bounds the requests in flight to one endpoint (default 16).
	Concurrency int
	// CursorInterval is how often an endpoint's position is saved (default 1 s). A crash
	// redelivers at most what was delivered since (receivers dedupe on webhook-id).
	CursorInterval time.Duration
	// Transport carries the requests; nil uses one that refuses link-local and metadata targets.
	Transport http.RoundTripper
}

// Deliverer sends the log's events to webhook endpoints: one dispatcher per endpoint reads the
// log from that endpoint's saved position, and one lane per room delivers that room's events
// in seq order with retries, so a failing room holds back only its own events and a slow or
// dead endpoint only itself.
//
// Lifecycle: NewDeliverer starts nothing; Run starts the dispatchers and stops them (saving
// every position) when its context ends. The API methods are safe for concurrent use at any
// time; endpoints added before Run start with it.
type Deliverer struct {
	opts   DeliveryOptions
	cfg    Config
	log    *slog.Logger
	clock  func() time.Time
	events *Log
	store  endpointStore
	client *http.Client

	attempts *prometheus.CounterVec

	ready chan struct{} // closed once Run has loaded the endpoints

	mu          sync.Mutex
	runCtx      context.Context // Run's; owns replays
	ctx         context.Context // while this node delivers (always, with an embedded log); else nil
	endpoints   map[string]*storedEndpoint
	running     map[string]*dispatcher
	dispatchers sync.WaitGroup
	wg          sync.WaitGroup // replays
}

// NewDeliverer validates opts; it starts nothing.
func NewDeliverer(opts DeliveryOptions) (*Deliverer, error) {
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.LaneLimit <= 0 {
		opts.LaneLimit = 256
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 16
	}
	if opts.CursorInterval <= 0 {
		opts.CursorInterval = time.Second
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "sluice-webhooks"
	}
	if opts.Transport == nil {
		opts.Transport = NewTransport()
	}
	return &Deliverer{
		opts:      opts,
		cfg:       opts.Config,
		log:       opts.Logger,
		clock:     opts.Clock,
		events:    opts.Log,
		store:     endpointStore{kv: opts.Log.State()},
		client:    &http.Client{Transport: opts.Transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		endpoints: map[string]*storedEndpoint{},
		running:   map[string]*dispatcher{},
		ready:     make(chan struct{}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_webhook_attempts_total",
			Help: "Webhook delivery attempts by endpoint and result (delivered, retry, failed, gone)."}, []string{"endpoint", "result"}),
	}, nil
}

// NewTransport returns the HTTP transport of deliveries: no proxy, and a dialer that refuses
// link-local and metadata addresses after name resolution.
func NewTransport() *http.Transport {
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: dialControl}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 0, // bounded by the per-attempt timeout
	}
}

// Collectors returns the deliverer's metrics.
func (d *Deliverer) Collectors() []prometheus.Collector { return []prometheus.Collector{d.attempts} }

// Run loads the endpoints, delivers until ctx ends, then stops every dispatcher and saves
// their positions.
func (d *Deliverer) Run(ctx context.Context) error {
	if err := d.loadEndpoints(ctx); err != nil {
		return err
	}
	d.mu.Lock()
	d.runCtx = ctx
	d.mu.Unlock()
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		d.watchEndpoints(ctx)
	}()
	close(d.ready)
	if d.events.External() {
		d.leadLoop(ctx) // several nodes share the log: one of them delivers
	} else {
		d.serve(ctx)
	}
	<-watched
	d.mu.Lock()
	d.runCtx = nil // no replay starts any more
	d.mu.Unlock()
	d.wg.Wait()
	return nil
}

// serve runs the dispatchers of the enabled endpoints until ctx ends and waits for them.
func (d *Deliverer) serve(ctx context.Context) {
	d.mu.Lock()
	d.ctx = ctx
	for _, se := range d.endpoints {
		if !se.Disabled {
			d.startLocked(se)
		}
	}
	d.mu.Unlock()
	<-ctx.Done()
	d.mu.Lock()
	d.ctx = nil // no dispatcher starts any more
	d.mu.Unlock()
	d.dispatchers.Wait()
}

// Ready is closed once Run has loaded the endpoints; the API methods wait for it.
func (d *Deliverer) Ready() <-chan struct{} { return d.ready }

// waitReady waits until Run has loaded the endpoints, or ctx ends.
func (d *Deliverer) waitReady(ctx context.Context) error {
	select {
	case <-d.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("webhooks: not started yet: %w", ctx.Err())
	}
}

// loadEndpoints merges the config's endpoints with the stored ones: a config endpoint keeps its
// generated secret and disabled flag while its URL is unchanged; stored config endpoints no
// longer in the config are removed.
func (d *Deliverer) loadEndpoints(ctx context.Context) error {
	stored, err := d.store.list(ctx)
	if err != nil {
		return fmt.Errorf("webhooks: loading endpoints: %w", err)
	}
	byID := map[string]*storedEndpoint{}
	for _, se := range stored {
		byID[se.ID] = se
	}
	inConfig := map[string]bool{}
	for _, ec := range d.cfg.Endpoints {
		id := ec.ID
		if id == "" {
			id = configEndpointID(ec.URL)
		}
		inConfig[id] = true
		se := &storedEndpoint{Endpoint: Endpoint{ID: id, URL: ec.URL, Events: append([]string{}, ec.Events...), Rooms: append([]string{}, ec.Rooms...),
			Source: SourceConfig, CreatedAt: d.clock().UTC()}, Secret: ec.Secret}
		if err := validateEndpoint(&se.Endpoint); err != nil {
			return fmt.Errorf("webhooks: endpoint %s: %w", id, err)
		}
		if old := byID[id]; old != nil && old.Source == SourceAPI {
			return fmt.Errorf("webhooks: config endpoint id %q is already used by an endpoint added through the API", id)
		} else if old != nil && old.URL == se.URL {
			se.CreatedAt, se.Disabled, se.DisabledAt, se.DisabledReason = old.CreatedAt, old.Disabled, old.DisabledAt, old.DisabledReason
			if se.Secret == "" {
				se.Secret = old.Secret
			}
		}
		if se.Secret == "" {
			se.Secret = NewSecret()
			d.log.Warn("webhooks: endpoint has no secret in the config; generated one (show it with `sluice webhooks secret ID`)", "endpoint", id)
		}
		if _, found, err := d.store.cursor(ctx, id); err != nil {
			return fmt.Errorf("webhooks: endpoint %s: %w", id, err)
		} else if !found {
			// a new config endpoint gets the events of this run of the daemon on, not the history
			if err := d.store.setCursor(ctx, id, d.events.startSeq); err != nil {
				return fmt.Errorf("webhooks: endpoint %s: %w", id, err)
			}
		}
		if err := d.store.save(ctx, se); err != nil {
			return fmt.Errorf("webhooks: saving endpoint %s: %w", id, err)
		}
		byID[id] = se
	}
	for id, se := range byID {
		if se.Source == SourceConfig && !inConfig[id] {
			if err := d.store.delete(ctx, id); err != nil {
				return fmt.Errorf("webhooks: removing endpoint %s: %w", id, err)
			}
			delete(byID, id)
		}
	}
	d.mu.Lock()
	d.endpoints = byID
	d.mu.Unlock()
	return nil
}

// startLocked starts the dispatcher of an endpoint; d.mu held, Run started.
func (d *Deliverer) startLocked(se *storedEndpoint) {
	if d.ctx == nil || d.ctx.Err() != nil || d.running[se.ID] != nil {
		return
	}
	signer, err := NewSigner(se.Secret)
	if err != nil {
		d.log.Error("webhooks: endpoint secret unusable", "endpoint", se.ID, "err", err)
		return
	}
	ctx, cancel := context.WithCancel(d.ctx)
	p := &dispatcher{d: d, ep: se.Endpoint, signer: signer, ctx: ctx, cancel: cancel, lanes: map[string]*lane{},
		sem: make(chan struct{}, d.opts.Concurrency), log: d.log.With("endpoint", se.ID)}
	d.running[se.ID] = p
	d.dispatchers.Add(1)
	go func() {
		defer d.dispatchers.Done()
		p.run()
		d.mu.Lock()
		if d.running[se.ID] == p {
			delete(d.running, se.ID)
		}
		d.mu.Unlock()
	}()
}

// stop ends an endpoint's dispatcher and waits for it to save its position.
func (d *Deliverer) stop(id string) {
	d.mu.Lock()
	p := d.running[id]
	d.mu.Unlock()
	if p != nil {
		p.cancel()
		<-p.done()
	}
}

// delay returns the wait before attempt n+1 (n >= 1): the schedule's, with ±20 % of jitter so
// that the retries of many events (or of many nodes) do not arrive together.
func (d *Deliverer) delay(n int) time.Duration {
	s := d.cfg.RetrySchedule
	w := s[len(s)-1]
	if n-1 < len(s) {
		w = s[n-1]
	}
	return time.Duration(float64(w) * (0.8 + 0.4*rand.Float64())) //nolint:gosec // jitter, not a secret
}

// maxRetryAfter bounds the wait a receiver's Retry-After may ask for.
const maxRetryAfter = time.Hour

// retryAfter reads the Retry-After of a 429 or 503 answer (RFC 9110 §10.2.3: seconds or an
// HTTP date); 0 when there is none.
func retryAfter(resp *http.Response, now time.Time) time.Duration {
	if resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable {
		return 0
	}
	v := strings.TrimSpace(resp.Header.Get("Retry-After"))
	if v == "" {
		return 0
	}
	var wait time.Duration
	if secs, err := strconv.Atoi(v); err == nil {
		wait = time.Duration(secs) * time.Second
	} else if at, err := http.ParseTime(v); err == nil {
		wait = at.Sub(now)
	}
	return min(max(wait, 0), maxRetryAfter)
}

// attemptResult is the outcome of one POST.
type attemptResult struct {
	code     int
	err      error
	duration time.Duration
	// retryAfter is the wait the receiver asked for (429/503 with Retry-After), 0 for none.
	retryAfter time.Duration
}

func (r attemptResult) ok() bool { return r.err == nil && r.code/100 == 2 }

func (r attemptResult) errText() string {
	switch {
	case r.err != nil:
		return r.err.Error()
	case !r.ok():
		return fmt.Sprintf("HTTP %d", r.code)
	}
	return ""
}

// post sends one signed attempt of body to the endpoint.
func (d *Deliverer) post(ctx context.Context, ep *Endpoint, signer *Signer, id string, body []byte) attemptResult {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(body))
	if err != nil {
		return attemptResult{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", d.opts.UserAgent)
	// lets net/http resend the request on a fresh connection when a pooled keep-alive
	// connection turns out dead (it never replays a POST otherwise, and the event would wait
	// for the retry schedule); receivers dedupe on webhook-id anyway
	req.Header.Set("Idempotency-Key", id)
	signer.SetHeaders(req.Header, id, d.clock(), body)
	start := time.Now()
	resp, err := d.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // the URL may carry a token in its query: keep it out of records
		}
		if ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %s", d.cfg.Timeout)
		}
		return attemptResult{err: err, duration: time.Since(start)}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	return attemptResult{code: resp.StatusCode, duration: time.Since(start), retryAfter: retryAfter(resp, time.Now())}
}

// disable marks an endpoint disabled (it answered 410 Gone) and stops its dispatcher.
func (d *Deliverer) disable(ctx context.Context, id, reason string) {
	d.mu.Lock()
	se := d.endpoints[id]
	if se == nil || se.Disabled {
		d.mu.Unlock()
		return
	}
	now := d.clock().UTC()
	se.Disabled, se.DisabledAt, se.DisabledReason = true, &now, reason
	c := *se
	d.mu.Unlock()
	if err := d.store.save(ctx, &c); err != nil {
		d.log.Warn("webhooks: saving the disabled endpoint", "endpoint", id, "err", err)
	}
	d.log.Warn("webhooks: endpoint disabled", "endpoint", id, "reason", reason)
}
