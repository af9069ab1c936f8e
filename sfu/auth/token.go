// Package auth issues and checks access tokens: HS256 JSON Web Tokens (RFC 7519, RFC 7515)
// whose `iss` names an API key of the config and whose signature is made with that key's secret.
// Secrets are compared in constant time and never appear in errors.
package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Errors of Verify; each maps to an auth.failed reason with Reason.
var (
	ErrMissingToken     = errors.New("missing token")
	ErrInvalidToken     = errors.New("invalid token")
	ErrExpiredToken     = errors.New("expired token")
	ErrPermissionDenied = errors.New("permission denied")
	ErrUnknownKey       = errors.New("unknown stream key")
)

// Grants say what a token allows.
type Grants struct {
	// Room limits publish and subscribe to one room; "" with Admin means every room.
	Room      string `json:"room,omitempty"`
	Publish   bool   `json:"publish,omitempty"`
	Subscribe bool   `json:"subscribe,omitempty"`
	// Admin allows the HTTP API and every room.
	Admin bool `json:"admin,omitempty"`
}

// Claims are the token's payload.
type Claims struct {
	Issuer    string `json:"iss"`
	Identity  string `json:"sub,omitempty"`
	Name      string `json:"name,omitempty"`
	IssuedAt  int64  `json:"iat,omitempty"`
	NotBefore int64  `json:"nbf,omitempty"`
	ExpiresAt int64  `json:"exp"`
	Grants    Grants `json:"grants"`
	// Metadata and Video are the claims of LiveKit access tokens (livekit.go).
	Metadata string      `json:"metadata,omitempty"`
	Video    *VideoGrant `json:"video,omitempty"`
}

// Action is what a caller wants to do in a room.
type Action int

// Actions checked by Allows.
const (
	ActionPublish Action = iota
	ActionSubscribe
	ActionAdmin
)

// Allows reports whether the claims permit action in room ("" for API calls not tied to one).
func (c *Claims) Allows(action Action, room string) bool {
	g := c.Grants
	if g.Admin && (g.Room == "" || g.Room == room) {
		return true
	}
	if g.Room == "" || g.Room != room {
		return false
	}
	switch action {
	case ActionPublish:
		return g.Publish
	case ActionSubscribe:
		return g.Subscribe
	default: // ActionAdmin needs the admin grant, handled above
		return false
	}
}

// Sign makes a token for claims with the API key's secret. claims.Issuer is set to key.
func Sign(key, secret string, claims Claims) (string, error) {
	if key == "" || secret == "" {
		return "", errors.New("sign: key and secret are required")
	}
	claims.Issuer = key
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(payload)
	return signing + "." + enc.EncodeToString(mac(secret, signing)), nil
}

func mac(secret, data string) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(data))
	return m.Sum(nil)
}

// Verifier checks tokens against the configured keys. Safe for concurrent use.
type Verifier struct {
	keys        map[string]string
	clock       func() time.Time
	maxLifetime time.Duration
}

// NewVerifier returns a verifier for cfg; clock defaults to time.Now.
func NewVerifier(cfg Config, clock func() time.Time) *Verifier {
	if clock == nil {
		clock = time.Now
	}
	keys := make(map[string]string, len(cfg.Keys))
	for k, v := range cfg.Keys {
		keys[k] = v
	}
	maxLifetime := cfg.MaxTokenLifetime
	if maxLifetime <= 0 {
		maxLifetime = DefaultMaxTokenLifetime
	}
	return &Verifier{keys: keys, clock: clock, maxLifetime: maxLifetime}
}

// OpenMode reports whether no keys are configured.
func (v *Verifier) OpenMode() bool { return len(v.keys) == 0 }

// Secret returns the secret of an API key, for minting tokens in-process.
func (v *Verifier) Secret(key string) (string, bool) {
	s, ok := v.keys[key]
	return s, ok
}

// AnyKey returns one configured key and its secret (the first in name order), for the daemon's
// own tokens; ok is false in open mode.
func (v *Verifier) AnyKey() (key, secret string, ok bool) {
	for k := range v.keys {
		if key == "" || k < key {
			key = k
		}
	}
	return key, v.keys[key], key != ""
}

// Verify checks a token's form, signature and times.
func (v *Verifier) Verify(token string) (*Claims, error) {
	if token == "" {
		return nil, ErrMissingToken
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%w: not a JWT", ErrInvalidToken)
	}
	enc := base64.RawURLEncoding
	var header struct {
		Alg string `json:"alg"`
	}
	if raw, err := enc.DecodeString(parts[0]); err != nil || json.Unmarshal(raw, &header) != nil {
		return nil, fmt.Errorf("%w: malformed header", ErrInvalidToken)
	}
	if header.Alg != "HS256" {
		return nil, fmt.Errorf("%w: algorithm %q is not HS256", ErrInvalidToken, header.Alg)
	}
	raw, err := enc.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("%w: malformed payload", ErrInvalidToken)
	}
	var c Claims
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("%w: malformed claims", ErrInvalidToken)
	}
	secret, ok := v.keys[c.Issuer]
	if !ok {
		// Compare anyway so that an unknown key costs the same as a bad signature.
		secret = "unknown-key-placeholder-secret-0000"
	}
	sig, err := enc.DecodeString(parts[2])
	good := err == nil && subtle.ConstantTimeCompare(sig, mac(secret, parts[0]+"."+parts[1])) == 1
	if !ok || !good {
		return nil, fmt.Errorf("%w: signature does not verify", ErrInvalidToken)
	}
	c.applyVideo()
	now := v.clock().Unix()
	if c.ExpiresAt == 0 {
		return nil, fmt.Errorf("%w: no exp claim", ErrInvalidToken)
	}
	if now >= c.ExpiresAt {
		return nil, ErrExpiredToken
	}
	if c.NotBefore != 0 && now < c.NotBefore-30 { // 30 s of clock skew
		return nil, fmt.Errorf("%w: not valid yet", ErrInvalidToken)
	}
	from := now
	if c.IssuedAt != 0 && c.IssuedAt < now {
		from = c.IssuedAt
	}
	if limit := int64(v.maxLifetime / time.Second); c.ExpiresAt-from > limit+30 { // 30 s of clock skew
		return nil, fmt.Errorf("%w: lifetime longer than auth.max_token_lifetime", ErrInvalidToken)
	}
	return &c, nil
}

// ParseUnverified decodes a token's claims without checking its signature or times: open mode
// reads the room and identity of LiveKit tokens that way.
func ParseUnverified(token string) (*Claims, error) {
	if token == "" {
		return nil, ErrMissingToken
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%w: not a JWT", ErrInvalidToken)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("%w: malformed payload", ErrInvalidToken)
	}
	var c Claims
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("%w: malformed claims", ErrInvalidToken)
	}
	c.applyVideo()
	return &c, nil
}

// Reason maps an error of this package to the auth.failed reason of EVENTS.md.
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrMissingToken):
		return "missing_token"
	case errors.Is(err, ErrExpiredToken):
		return "expired_token"
	case errors.Is(err, ErrPermissionDenied):
		return "permission_denied"
	case errors.Is(err, ErrUnknownKey):
		return "unknown_stream_key"
	}
	return "invalid_token"
}

// Equal compares two secrets in constant time.
func Equal(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// BearerToken extracts the token of an "Authorization: Bearer <token>" header value.
func BearerToken(header string) string {
	if len(header) > 7 && strings.EqualFold(header[:7], "bearer ") {
		return strings.TrimSpace(header[7:])
	}
	return ""
}
