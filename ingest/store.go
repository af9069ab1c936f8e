package ingest

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sluice-media/sluice/sfu"
)

// Ingest states (the `state` of the ingest object).
const (
	StateIdle         = "idle"
	StateConnecting   = "connecting"
	StateConnected    = "connected"
	StateReconnecting = "reconnecting"
	StateDisconnected = "disconnected"
)

// Errors of the store.
var (
	ErrNotFound   = errors.New("ingest not found")
	ErrFromConfig = errors.New("ingest is defined in the config file")
	ErrExists     = errors.New("ingest id already exists")
)

// InvalidError is a definition that fails validation.
type InvalidError struct{ Err error }

func (e *InvalidError) Error() string { return e.Err.Error() }
func (e *InvalidError) Unwrap() error { return e.Err }

// Ingest is a definition with what the daemon adds: its stream key (a secret) and its state.
type Ingest struct {
	Definition
	// StreamKey authorizes RTMP and RTSP push publishers; it never appears in events or logs.
	StreamKey  string    `json:"stream_key,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	FromConfig bool      `json:"from_config,omitempty"`
	State      string    `json:"state"`
	Retries    int       `json:"retries"`
	// Error is the last error of a pull ingest (no credentials in it).
	Error string `json:"error,omitempty"`
	// Unsupported lists source tracks that could not be published (codec names).
	Unsupported []string `json:"unsupported,omitempty"`
}

// Info returns the event object: URL without credentials, never the stream key.
func (i *Ingest) Info() *sfu.IngestInfo {
	return &sfu.IngestInfo{
		ID:                  i.ID,
		Type:                i.Type,
		Room:                i.Room,
		ParticipantIdentity: i.Identity,
		URL:                 RedactURL(i.URL),
		State:               i.State,
		Retries:             i.Retries,
	}
}

// Redacted returns a copy fit for listings: no stream key, no URL credentials.
func (i Ingest) Redacted() Ingest {
	i.StreamKey = ""
	i.Passphrase = ""
	i.URL = RedactURL(i.URL)
	return i
}

// RedactURL removes the password (and user) from a URL for display.
func RedactURL(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid url)"
	}
	if u.User == nil {
		return u.String()
	}
	u.User = nil
	scheme, rest, _ := strings.Cut(u.String(), "://")
	return scheme + "://***@" + rest
}

// Handler runs the ingests of one type: RTMP and RTSP push servers look keys up and end live
// sessions on delete; the RTSP puller starts and stops camera pulls.
type Handler interface {
	// Start is called for each ingest of the type at registration and on creation. It must not
	// block.
	Start(ing Ingest)
	// Stop ends the ingest's live session or pull (deleted or shutting down). It may block
	// until it has ended.
	Stop(id string)
}

// Store keeps the ingest definitions: those of the config file and those created through the
// API, persisted in one JSON file written atomically. Safe for concurrent use.
type Store struct {
	path string
	emit sfu.Emitter
	log  *slog.Logger

	mu       sync.Mutex
	items    map[string]*Ingest
	byKey    map[[32]byte]string // sha256(stream key) -> id
	handlers map[string]Handler
}

// Open loads the persisted ingests from dir and adds the config's definitions.
func Open(dir string, fromConfig []Definition, emit sfu.Emitter, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("ingests: %w", err)
	}
	s := &Store{path: filepath.Join(dir, "ingests.json"), emit: emit, log: log,
		items: map[string]*Ingest{}, byKey: map[[32]byte]string{}, handlers: map[string]Handler{}}
	data, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("ingests: %w", err)
	default:
		var saved []*Ingest
		if err := json.Unmarshal(data, &saved); err != nil {
			return nil, fmt.Errorf("ingests: %s is corrupt: %w", s.path, err)
		}
		for _, ing := range saved {
			ing.State, ing.Retries, ing.Error, ing.Unsupported = StateIdle, 0, "", nil
			s.index(ing)
		}
	}
	for _, d := range fromConfig {
		if _, dup := s.items[d.ID]; dup {
			return nil, fmt.Errorf("ingests: id %q is both in the config and created through the API", d.ID)
		}
		ing := &Ingest{Definition: d, StreamKey: d.StreamKey, FromConfig: true, State: StateIdle}
		s.index(ing)
	}
	return s, nil
}

func (s *Store) index(ing *Ingest) {
	s.items[ing.ID] = ing
	if ing.StreamKey != "" {
		s.byKey[sha256.Sum256([]byte(ing.StreamKey))] = ing.ID
	}
}

// Register attaches the handler of an ingest type and starts the existing ingests of that type.
func (s *Store) Register(typ string, h Handler) {
	s.mu.Lock()
	s.handlers[typ] = h
	var start []Ingest
	for _, ing := range s.items {
		if ing.Type == typ {
			start = append(start, *ing)
		}
	}
	s.mu.Unlock()
	for _, ing := range start {
		h.Start(ing)
	}
}

// Create adds an ingest (ingest.created): it validates the definition, assigns an id and, for
// publish types, a stream key, persists it and starts it.
func (s *Store) Create(d Definition, now time.Time) (Ingest, error) {
	if err := d.Validate(); err != nil {
		return Ingest{}, &InvalidError{err}
	}
	if d.Type == TypeRTSPPull && d.Transport == "" {
		d.Transport = "auto"
	}
	s.mu.Lock()
	if d.ID == "" {
		d.ID = sfu.NewID("IN_")
	} else if _, dup := s.items[d.ID]; dup {
		s.mu.Unlock()
		return Ingest{}, fmt.Errorf("%w: %s", ErrExists, d.ID)
	}
	ing := &Ingest{Definition: d, StreamKey: d.StreamKey, CreatedAt: now.UTC(), State: StateIdle}
	ing.Definition.StreamKey = ""
	if d.Type != TypeRTSPPull && ing.StreamKey == "" {
		ing.StreamKey = newStreamKey()
	}
	s.index(ing)
	if err := s.saveLocked(); err != nil {
		delete(s.items, ing.ID)
		delete(s.byKey, sha256.Sum256([]byte(ing.StreamKey)))
		s.mu.Unlock()
		return Ingest{}, err
	}
	out := *ing
	h := s.handlers[d.Type]
	s.mu.Unlock()
	ev := &sfu.Event{Type: sfu.EventIngestCreated, Ingest: out.Info()}
	s.emit.Emit(ev)
	sfu.Settle(s.emit, ev.RoomName())
	if h != nil {
		h.Start(out)
	}
	return out, nil
}

// Delete removes an ingest (ingest.deleted) after its handler stopped its session.
func (s *Store) Delete(id string) error {
	s.mu.Lock()
	ing, ok := s.items[id]
	if !ok {
		s.mu.Unlock()
		return ErrNotFound
	}
	if ing.FromConfig {
		s.mu.Unlock()
		return ErrFromConfig
	}
	h := s.handlers[ing.Type]
	s.mu.Unlock()
	if h != nil {
		h.Stop(id)
	}
	s.mu.Lock()
	ing, ok = s.items[id]
	if !ok {
		s.mu.Unlock()
		return ErrNotFound // deleted concurrently
	}
	delete(s.items, id)
	delete(s.byKey, sha256.Sum256([]byte(ing.StreamKey)))
	err := s.saveLocked()
	info := ing.Info()
	s.mu.Unlock()
	if err != nil {
		return err
	}
	ev := &sfu.Event{Type: sfu.EventIngestDeleted, Ingest: info}
	s.emit.Emit(ev)
	sfu.Settle(s.emit, ev.RoomName())
	return nil
}

// Get returns one ingest.
func (s *Store) Get(id string) (Ingest, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ing, ok := s.items[id]
	if !ok {
		return Ingest{}, false
	}
	return *ing, true
}

// List returns every ingest sorted by id.
func (s *Store) List() []Ingest {
	s.mu.Lock()
	out := make([]Ingest, 0, len(s.items))
	for _, ing := range s.items {
		out = append(out, *ing)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// ByStreamKey finds the ingest of a stream key. The lookup goes through a hash of the key, so
// its time does not depend on how much of a guess matches.
func (s *Store) ByStreamKey(key string) (Ingest, bool) {
	if key == "" {
		return Ingest{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.byKey[sha256.Sum256([]byte(key))]
	if !ok {
		return Ingest{}, false
	}
	return *s.items[id], true
}

// SetState moves an ingest to state (ingest.state_changed with prev_state and err) and records
// retries and the error for the status. Moving to the current state emits nothing.
func (s *Store) SetState(id, state string, retries int, reason string, cause error) {
	s.mu.Lock()
	ing, ok := s.items[id]
	if !ok {
		s.mu.Unlock()
		return
	}
	prev := ing.State
	ing.State, ing.Retries = state, retries
	ing.Error = ""
	if cause != nil {
		ing.Error = cause.Error()
	}
	info := ing.Info()
	s.mu.Unlock()
	if prev == state {
		return
	}
	ev := &sfu.Event{Type: sfu.EventIngestStateChanged, Ingest: info, PrevState: prev, Reason: reason}
	if cause != nil {
		ev.Error = &sfu.ErrorInfo{Code: reason, Message: cause.Error()}
		if reason == "" {
			ev.Error.Code = sfu.ReasonError
		}
	}
	s.emit.Emit(ev)
}

// SetUnsupported records the source tracks an ingest could not publish.
func (s *Store) SetUnsupported(id string, codecs []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ing, ok := s.items[id]; ok {
		ing.Unsupported = append([]string(nil), codecs...)
	}
}

// saveLocked writes the API-created ingests atomically (temp file, fsync, rename).
func (s *Store) saveLocked() error {
	var saved []*Ingest
	for _, ing := range s.items {
		if !ing.FromConfig {
			saved = append(saved, ing)
		}
	}
	sort.Slice(saved, func(i, j int) bool { return saved[i].ID < saved[j].ID })
	data, err := json.MarshalIndent(saved, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(s.path, data)
}

func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".ingests-*")
	if err != nil {
		return fmt.Errorf("ingests: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // no-op after a successful rename
	if err := tmp.Chmod(0o600); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("ingests: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("ingests: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("ingests: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("ingests: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("ingests: %w", err)
	}
	return nil
}

// newStreamKey returns "sk_" and 24 random base62 characters (143 bits).
func newStreamKey() string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := make([]byte, 24)
	for i := range b {
		for {
			var r [1]byte
			_, _ = rand.Read(r[:])
			if int(r[0]) < 248 { // 248 = 4*62: no modulo bias
				b[i] = alphabet[int(r[0])%62]
				break
			}
		}
	}
	return "sk_" + string(b)
}
