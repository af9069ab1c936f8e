package webhooks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/netguard"
)

// Endpoint is one webhook destination: from the config file (Source "config") or added through
// the API (Source "api", persisted in the state bucket). Secret never leaves the daemon except
// in the answer that creates it and GET /v1/webhooks/{id}/secret.
type Endpoint struct {
	ID        string    `json:"id"`
	URL       string    `json:"url"`
	Secret    string    `json:"-"`
	Events    []string  `json:"events"`
	Rooms     []string  `json:"rooms"`
	Source    string    `json:"source"`
	CreatedAt time.Time `json:"created_at"`
	// Disabled is set when the endpoint answered 410 Gone; replay enables it again.
	Disabled       bool       `json:"disabled"`
	DisabledAt     *time.Time `json:"disabled_at,omitempty"`
	DisabledReason string     `json:"disabled_reason,omitempty"`
}

// storedEndpoint is the persisted form (with the secret).
type storedEndpoint struct {
	Endpoint
	Secret string `json:"secret"`
}

// Endpoint sources.
const (
	SourceConfig = "config"
	SourceAPI    = "api"
)

// Matches reports whether an event of type typ in room goes to this endpoint: stream.stats only
// when listed by name, other types by the Events globs (empty: all), rooms by the Rooms globs
// (empty: all; with globs, events that concern no room are not sent).
func (e *Endpoint) Matches(typ, room string) bool {
	if typ == sfu.EventStreamStats {
		found := false
		for _, g := range e.Events {
			found = found || g == sfu.EventStreamStats
		}
		if !found {
			return false
		}
	} else if !matchAny(e.Events, typ, true) {
		return false
	}
	if len(e.Rooms) == 0 {
		return true
	}
	return room != "" && matchAny(e.Rooms, room, false)
}

// validateEndpoint checks an endpoint's URL, globs, id and secret.
func validateEndpoint(e *Endpoint) error {
	if e.ID == "" || len(e.ID) > 64 || kvKey(e.ID) != e.ID {
		return fmt.Errorf("id %q: use 1 to 64 characters of A-Z a-z 0-9 - _", e.ID)
	}
	u, err := url.Parse(e.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("url: must be an http:// or https:// URL")
	}
	if u.User != nil {
		return fmt.Errorf("url: credentials in the URL are not supported; the signature authenticates the sender")
	}
	if ip, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err == nil && blockedAddr(ip) {
		return fmt.Errorf("url: %s is a link-local or metadata address, which webhooks never call", ip)
	}
	for _, g := range append(append([]string{}, e.Events...), e.Rooms...) {
		if _, err := path.Match(g, ""); err != nil || g == "" {
			return fmt.Errorf("%q is not a glob", g)
		}
	}
	if e.Secret != "" {
		if err := ValidateSecret(e.Secret); err != nil {
			return err
		}
	}
	return nil
}

// configEndpointID derives a stable id for a config endpoint written without one.
func configEndpointID(rawURL string) string {
	sum := sha256.Sum256([]byte(rawURL))
	return "cfg-" + hex.EncodeToString(sum[:4])
}

// blockedAddr reports the addresses webhooks never call: link-local and metadata addresses.
func blockedAddr(ip netip.Addr) bool { return netguard.LinkLocalOrMetadata(ip) }

// dialControl refuses blocked addresses at connect time, after DNS resolution, so that a name
// resolving to a metadata address is refused as well.
func dialControl(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return err
	}
	if blockedAddr(ip) {
		return fmt.Errorf("%w: %s", errBlockedAddr, ip)
	}
	return nil
}

// endpointStore persists API endpoints, disabled flags, generated secrets and cursors in the
// state bucket. Safe for concurrent use.
type endpointStore struct{ kv jetstream.KeyValue }

func (s endpointStore) load(ctx context.Context, id string) (*storedEndpoint, error) {
	e, err := s.kv.Get(ctx, "endpoint."+id)
	if err != nil {
		return nil, err
	}
	var se storedEndpoint
	if err := json.Unmarshal(e.Value(), &se); err != nil {
		return nil, fmt.Errorf("endpoint %s: %w", id, err)
	}
	return &se, nil
}

func (s endpointStore) save(ctx context.Context, se *storedEndpoint) error {
	raw, err := json.Marshal(se) //nolint:gosec // the endpoint store is where secrets are kept
	if err != nil {
		return err
	}
	_, err = s.kv.Put(ctx, "endpoint."+se.ID, raw)
	return err
}

func (s endpointStore) delete(ctx context.Context, id string) error {
	for _, k := range []string{"endpoint." + id, "cursor." + id} {
		if err := s.kv.Purge(ctx, k); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return err
		}
	}
	return nil
}

// list returns every stored endpoint (API ones, and the state of config ones).
func (s endpointStore) list(ctx context.Context) ([]*storedEndpoint, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, "endpoint.*")
	if err != nil {
		return nil, err
	}
	var out []*storedEndpoint
	for k := range lister.Keys() {
		se, err := s.load(ctx, strings.TrimPrefix(k, "endpoint."))
		if err != nil {
			continue // deleted meanwhile
		}
		out = append(out, se)
	}
	return out, nil
}

func (s endpointStore) cursor(ctx context.Context, id string) (uint64, bool, error) {
	e, err := s.kv.Get(ctx, "cursor."+id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	var seq uint64
	_, err = fmt.Sscan(string(e.Value()), &seq)
	return seq, err == nil, err
}

func (s endpointStore) setCursor(ctx context.Context, id string, seq uint64) error {
	_, err := s.kv.PutString(ctx, "cursor."+id, fmt.Sprint(seq))
	return err
}
