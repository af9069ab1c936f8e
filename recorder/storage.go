package recorder

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// StorageConfig is the `storage:` section: named S3-compatible object storage targets that
// recordings are uploaded to.
type StorageConfig struct {
	// Targets by name; a recording names one (request, auto rule, or recording.storage).
	Targets map[string]Target `yaml:"targets"`
	// MaxAttempts is how often one file's upload is tried before the recording's upload fails.
	MaxAttempts int `yaml:"max_attempts"`
	// MinBackoff and MaxBackoff bound the wait between attempts (doubling, with jitter).
	MinBackoff time.Duration `yaml:"min_backoff"`
	MaxBackoff time.Duration `yaml:"max_backoff"`
}

// Target is one S3-compatible bucket. Credentials are literal, "env:VAR", or empty for the
// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY environment variables.
type Target struct {
	// Endpoint is host[:port], without scheme ("s3.eu-west-1.amazonaws.com", "minio:9000").
	Endpoint string `yaml:"endpoint"`
	Bucket   string `yaml:"bucket"`
	// Prefix is prepended to every object key: <prefix>/<room>/<recording-id>/<file>.
	Prefix    string `yaml:"prefix"`
	Region    string `yaml:"region"`
	AccessKey string `yaml:"access_key"`
	SecretKey string `yaml:"secret_key"`
	// TLS uses https (the default); false is for a server on a private network.
	TLS *bool `yaml:"tls"`
	// CAFile adds a PEM certificate authority to trust for this endpoint.
	CAFile string `yaml:"ca_file"`
	// DeleteLocal removes the local media files once every file and the manifest are uploaded
	// and verified; the manifest stays, so the recording is still listed and playable.
	DeleteLocal bool `yaml:"delete_local"`
}

// DefaultStorageConfig returns the documented defaults.
func DefaultStorageConfig() StorageConfig {
	return StorageConfig{Targets: map[string]Target{}, MaxAttempts: 8, MinBackoff: time.Second, MaxBackoff: time.Minute}
}

// Validate reports the first invalid value.
func (c StorageConfig) Validate() error {
	switch {
	case c.MaxAttempts < 1:
		return errors.New("max_attempts: must be at least 1")
	case c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff:
		return errors.New("min_backoff, max_backoff: must be positive, min not above max")
	}
	for _, name := range c.names() {
		t := c.Targets[name]
		switch {
		case sanitize(name) != name:
			return fmt.Errorf("targets.%s: a name takes only letters, digits, - and _", name)
		case t.Endpoint == "" || strings.Contains(t.Endpoint, "/"):
			return fmt.Errorf("targets.%s.endpoint: give host[:port] without a scheme", name)
		case t.Bucket == "":
			return fmt.Errorf("targets.%s.bucket: required", name)
		}
	}
	return nil
}

func (c StorageConfig) names() []string {
	names := make([]string, 0, len(c.Targets))
	for n := range c.Targets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// store is a target with its client. Safe for concurrent use.
type store struct {
	name   string
	t      Target
	client *minio.Client
}

// secret resolves a credential value: "env:VAR" reads the environment.
func secret(v string, env func(string) (string, bool)) (string, error) {
	if name, ok := strings.CutPrefix(v, "env:"); ok {
		s, ok := env(name)
		if !ok || s == "" {
			return "", fmt.Errorf("environment variable %s is not set", name)
		}
		return s, nil
	}
	return v, nil
}

// newStores builds a client per target; credentials are resolved now, so a missing variable is
// a start-up error that names the variable, never its value.
func newStores(c StorageConfig, env func(string) (string, bool)) (map[string]*store, error) {
	out := map[string]*store{}
	for _, name := range c.names() {
		t := c.Targets[name]
		ak, err := secret(t.AccessKey, env)
		if err != nil {
			return nil, fmt.Errorf("storage.targets.%s.access_key: %w", name, err)
		}
		sk, err := secret(t.SecretKey, env)
		if err != nil {
			return nil, fmt.Errorf("storage.targets.%s.secret_key: %w", name, err)
		}
		if ak == "" && sk == "" {
			ak, _ = env("AWS_ACCESS_KEY_ID")
			sk, _ = env("AWS_SECRET_ACCESS_KEY")
		}
		secure := t.TLS == nil || *t.TLS
		tr := http.DefaultTransport.(*http.Transport).Clone()
		if t.CAFile != "" {
			pem, err := os.ReadFile(t.CAFile)
			if err != nil {
				return nil, fmt.Errorf("storage.targets.%s.ca_file: %s", name, pathless(err))
			}
			pool, _ := x509.SystemCertPool()
			if pool == nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("storage.targets.%s.ca_file: no PEM certificate in it", name)
			}
			tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		cl, err := minio.New(t.Endpoint, &minio.Options{
			Creds: credentials.NewStaticV4(ak, sk, ""), Secure: secure, Region: t.Region,
			Transport: tr, MaxRetries: 1, // the uploader retries with its own backoff and events
		})
		if err != nil {
			return nil, fmt.Errorf("storage.targets.%s: %w", name, err)
		}
		out[name] = &store{name: name, t: t, client: cl}
	}
	return out, nil
}

// key is the object key of a file (rel is relative to the recordings directory).
func (s *store) key(rel string) string {
	return strings.TrimPrefix(path.Join(s.t.Prefix, rel), "/")
}

// location is the object's URL as events show it: endpoint, bucket and key, never credentials.
func (s *store) location(key string) string {
	u := *s.client.EndpointURL()
	u.User = nil
	u.Path = "/" + s.t.Bucket + "/" + key
	return u.String()
}
