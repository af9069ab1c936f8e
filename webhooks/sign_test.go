package webhooks

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The vector of the Standard Webhooks reference libraries (libraries/go webhook_symmetric_test.go).
const (
	vectorSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTS     = 1614265330
	vectorBody   = `{"test": 2432232314}`
	vectorSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestSignStandardWebhooksVector(t *testing.T) {
	s, err := NewSigner(vectorSecret)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Sign(vectorID, time.Unix(vectorTS, 0), []byte(vectorBody)); got != vectorSig {
		t.Fatalf("signature %s, want %s", got, vectorSig)
	}
	// the prefix is optional for the key, as in the reference libraries
	s2, _ := NewSigner(strings.TrimPrefix(vectorSecret, SecretPrefix))
	if got := s2.Sign(vectorID, time.Unix(vectorTS, 0), []byte(vectorBody)); got != vectorSig {
		t.Fatalf("unprefixed secret: %s", got)
	}
}

func TestVerify(t *testing.T) {
	s, _ := NewSigner(vectorSecret)
	now := time.Unix(vectorTS, 0)
	headers := func(sig string, ts int64) http.Header {
		h := http.Header{}
		h.Set(HeaderID, vectorID)
		h.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
		h.Set(HeaderSignature, sig)
		return h
	}
	other := "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
	for _, c := range []struct {
		name string
		h    http.Header
		body string
		now  time.Time
		ok   bool
	}{
		{"valid", headers(vectorSig, vectorTS), vectorBody, now, true},
		{"valid among several", headers(other+" v2,abc "+vectorSig, vectorTS), vectorBody, now, true},
		{"tampered body", headers(vectorSig, vectorTS), `{"test": 2432232315}`, now, false},
		{"wrong signature", headers(other, vectorTS), vectorBody, now, false},
		{"partial signature", headers("v1,", vectorTS), vectorBody, now, false},
		{"missing id", func() http.Header { h := headers(vectorSig, vectorTS); h.Del(HeaderID); return h }(), vectorBody, now, false},
		{"timestamp 5 min old is in", headers(vectorSig, vectorTS), vectorBody, now.Add(5 * time.Minute), true},
		{"timestamp too old", headers(vectorSig, vectorTS), vectorBody, now.Add(5*time.Minute + time.Second), false},
		{"timestamp too new", headers(vectorSig, vectorTS), vectorBody, now.Add(-5*time.Minute - time.Second), false},
		{"timestamp changed", headers(vectorSig, vectorTS+1), vectorBody, now, false},
		{"not a timestamp", headers(vectorSig, vectorTS), vectorBody, now, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "not a timestamp" {
				c.h.Set(HeaderTimestamp, "soon")
				c.ok = false
			}
			err := s.Verify(c.h, []byte(c.body), c.now, DefaultTolerance)
			if (err == nil) != c.ok {
				t.Fatalf("verify: %v, want ok=%v", err, c.ok)
			}
		})
	}
}

func TestSecrets(t *testing.T) {
	a, b := NewSecret(), NewSecret()
	if a == b || ValidateSecret(a) != nil {
		t.Fatalf("secrets %q %q", a, b)
	}
	for _, bad := range []string{"", "whsec_", "whsec_!!!", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_c2hvcnQ="} {
		if ValidateSecret(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzVerify(f *testing.F) {
	f.Add(vectorID, "1614265330", vectorSig, []byte(vectorBody))
	f.Add("", "x", "v1,", []byte{})
	s, _ := NewSigner(vectorSecret)
	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte) {
		h := http.Header{}
		h.Set(HeaderID, id)
		h.Set(HeaderTimestamp, ts)
		h.Set(HeaderSignature, sig)
		_ = s.Verify(h, body, time.Unix(vectorTS, 0), DefaultTolerance) // must not panic
		// a signature we make always verifies
		if err := s.Verify(func() http.Header {
			g := http.Header{}
			s.SetHeaders(g, id+"x", time.Unix(vectorTS, 0), body)
			return g
		}(), body, time.Unix(vectorTS, 0), DefaultTolerance); err != nil {
			t.Fatal(err)
		}
	})
}
