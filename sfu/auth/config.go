package auth

import (
	"fmt"
	"sort"
	"time"
)

// Config is the `auth:` section. An empty key set is open mode.
type Config struct {
	// Keys maps API key to secret. Tokens are HS256 JWTs whose `iss` is the key, signed with
	// its secret.
	Keys map[string]string `yaml:"keys"`
	// MaxTokenLifetime refuses tokens that live longer (from iat, or from now without one, to
	// exp); 0 is DefaultMaxTokenLifetime.
	MaxTokenLifetime time.Duration `yaml:"max_token_lifetime"`
}

// DefaultMaxTokenLifetime is the longest token lifetime accepted by default: a year and a day,
// the longest a token minted by the API may live.
const DefaultMaxTokenLifetime = 366 * 24 * time.Hour

// MinSecretLen is the shortest secret accepted: HS256 wants at least 256 bits of key.
const MinSecretLen = 32

// Validate rejects empty keys and short secrets (without printing them).
func (c Config) Validate() error {
	keys := make([]string, 0, len(c.Keys))
	for k := range c.Keys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if c.MaxTokenLifetime < 0 {
		return fmt.Errorf("max_token_lifetime: must not be negative")
	}
	for _, k := range keys {
		if k == "" {
			return fmt.Errorf("keys: an API key must not be empty")
		}
		if len(c.Keys[k]) < MinSecretLen {
			return fmt.Errorf("keys.%s: secret must be at least %d characters", k, MinSecretLen)
		}
	}
	return nil
}

// OpenMode reports whether no keys are configured.
func (c Config) OpenMode() bool { return len(c.Keys) == 0 }
