package webhooks

import (
	"context"
	"fmt"
	"sort"

	"github.com/sluice-media/sluice/sfu"
)

// AddRequest is the body of POST /v1/webhooks.
type AddRequest struct {
	URL    string   `json:"url"`
	Secret string   `json:"secret,omitempty"`
	Events []string `json:"events,omitempty"`
	Rooms  []string `json:"rooms,omitempty"`
}

// Added is the answer of POST /v1/webhooks: the endpoint and, once, its secret.
type Added struct {
	Endpoint
	Secret string `json:"secret"`
}

// Endpoints returns every endpoint, sorted by id, without secrets.
func (d *Deliverer) Endpoints() []Endpoint {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Endpoint, 0, len(d.endpoints))
	for _, se := range d.endpoints {
		out = append(out, se.Endpoint)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Endpoint returns one endpoint without its secret.
func (d *Deliverer) Endpoint(id string) (Endpoint, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	se := d.endpoints[id]
	if se == nil {
		return Endpoint{}, fmt.Errorf("%w: %s", ErrEndpointNotFound, id)
	}
	return se.Endpoint, nil
}

// Secret returns an endpoint's signing secret.
func (d *Deliverer) Secret(id string) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	se := d.endpoints[id]
	if se == nil {
		return "", fmt.Errorf("%w: %s", ErrEndpointNotFound, id)
	}
	return se.Secret, nil
}

// Add creates an endpoint (persisted; delivering from the next event on) and returns it with
// its secret, generated when the request has none.
func (d *Deliverer) Add(ctx context.Context, req AddRequest) (Added, error) {
	if err := d.waitReady(ctx); err != nil {
		return Added{}, err
	}
	se := &storedEndpoint{Endpoint: Endpoint{ID: sfu.NewID("wh_"), URL: req.URL, Events: req.Events, Rooms: req.Rooms,
		Source: SourceAPI, CreatedAt: d.clock().UTC()}, Secret: req.Secret}
	if se.Events == nil {
		se.Events = []string{}
	}
	if se.Rooms == nil {
		se.Rooms = []string{}
	}
	if err := validateEndpoint(&se.Endpoint); err != nil {
		return Added{}, fmt.Errorf("%w: %w", ErrInvalidEndpoint, err)
	}
	if se.Secret == "" {
		se.Secret = NewSecret()
	} else if err := ValidateSecret(se.Secret); err != nil {
		return Added{}, fmt.Errorf("%w: %w", ErrInvalidEndpoint, err)
	}
	// the position first: the endpoint gets the events stored after it was added
	last, err := d.events.LastSeq(ctx)
	if err != nil {
		return Added{}, err
	}
	if err := d.store.setCursor(ctx, se.ID, last); err != nil {
		return Added{}, err
	}
	if err := d.store.save(ctx, se); err != nil {
		return Added{}, err
	}
	d.mu.Lock()
	d.endpoints[se.ID] = se
	d.startLocked(se)
	d.mu.Unlock()
	return Added{Endpoint: se.Endpoint, Secret: se.Secret}, nil
}

// Remove deletes an API endpoint, its position and its pending deliveries.
func (d *Deliverer) Remove(ctx context.Context, id string) error {
	if err := d.waitReady(ctx); err != nil {
		return err
	}
	d.mu.Lock()
	se := d.endpoints[id]
	d.mu.Unlock()
	if se == nil {
		return fmt.Errorf("%w: %s", ErrEndpointNotFound, id)
	}
	if se.Source == SourceConfig {
		return ErrConfigEndpoint
	}
	d.stop(id)
	d.mu.Lock()
	delete(d.endpoints, id)
	d.mu.Unlock()
	return d.store.delete(ctx, id)
}

// enable clears an endpoint's disabled flag and restarts its deliveries from its position.
func (d *Deliverer) enable(ctx context.Context, id string) error {
	d.mu.Lock()
	se := d.endpoints[id]
	if se == nil {
		d.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrEndpointNotFound, id)
	}
	se.Disabled, se.DisabledAt, se.DisabledReason = false, nil, ""
	c := *se
	d.mu.Unlock()
	if err := d.store.save(ctx, &c); err != nil {
		return err
	}
	d.stop(id) // a dispatcher still winding down after the 410
	d.mu.Lock()
	d.startLocked(se)
	d.mu.Unlock()
	d.log.Info("webhooks: endpoint enabled again", "endpoint", id)
	return nil
}
