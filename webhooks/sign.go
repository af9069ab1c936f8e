package webhooks

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks headers (https://www.standardwebhooks.com, "Signature scheme").
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// SecretPrefix starts every webhook secret: "whsec_" + base64 of the HMAC key.
const SecretPrefix = "whsec_"

// DefaultTolerance is how far a webhook-timestamp may be from the receiver's clock.
const DefaultTolerance = 5 * time.Minute

// NewSecret returns a fresh random secret "whsec_<base64 of 32 bytes>".
func NewSecret() string {
	var key [32]byte
	_, _ = rand.Read(key[:]) // crypto/rand.Read never fails on supported platforms
	return SecretPrefix + base64.StdEncoding.EncodeToString(key[:])
}

// secretKey decodes a secret; the whsec_ prefix is optional, as in the reference libraries.
func secretKey(secret string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, SecretPrefix))
	if err != nil {
		return nil, errSecretNotDecoded
	}
	return key, nil
}

// ValidateSecret reports whether secret is a usable webhook secret.
func ValidateSecret(secret string) error {
	if !strings.HasPrefix(secret, SecretPrefix) {
		return ErrInvalidSecret
	}
	key, err := secretKey(secret)
	if err != nil || len(key) < 24 || len(key) > 64 {
		return ErrInvalidSecret
	}
	return nil
}

// Signer signs webhook bodies with one secret. Safe for concurrent use.
type Signer struct{ key []byte }

// NewSigner returns a signer for secret ("whsec_<base64>").
func NewSigner(secret string) (*Signer, error) {
	key, err := secretKey(secret)
	if err != nil || len(key) == 0 {
		return nil, ErrInvalidSecret
	}
	return &Signer{key: key}, nil
}

// Sign returns the webhook-signature value "v1,<base64 HMAC-SHA256(key, id.timestamp.body)>".
func (s *Signer) Sign(id string, ts time.Time, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(s.mac(id, ts.Unix(), body))
}

func (s *Signer) mac(id string, unix int64, body []byte) []byte {
	m := hmac.New(sha256.New, s.key)
	var num [20]byte
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write(strconv.AppendInt(num[:0], unix, 10))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// SetHeaders sets the three Standard Webhooks headers of a delivery.
func (s *Signer) SetHeaders(h http.Header, id string, ts time.Time, body []byte) {
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderSignature, s.Sign(id, ts, body))
}

// Verify checks a received webhook: the headers are present, the timestamp is within tolerance
// of now (tolerance <= 0 skips that check), and one of the space-separated v1 signatures
// matches the body. Comparison is constant time.
func (s *Signer) Verify(h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	id, tsText, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if id == "" || tsText == "" || sigs == "" {
		return ErrMissingHeaders
	}
	unix, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return ErrBadTimestamp
	}
	if tolerance > 0 {
		ts := time.Unix(unix, 0)
		if now.Sub(ts) > tolerance {
			return fmt.Errorf("%w (%s old)", ErrTimestampTooOld, now.Sub(ts).Round(time.Second))
		}
		if ts.Sub(now) > tolerance {
			return fmt.Errorf("%w (%s ahead)", ErrTimestampTooNew, ts.Sub(now).Round(time.Second))
		}
	}
	want := s.mac(id, unix, body)
	for _, sig := range strings.Fields(sigs) {
		version, value, ok := strings.Cut(sig, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(value)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return ErrNoMatchingSig
}
