package webhooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu/sfutest"
)

// readmeVerify is the README's "verifying a webhook in Go" snippet, kept here so it stays right.
func readmeVerify(secret string, r *http.Request, body []byte) bool {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return false
	}
	id, ts := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || math.Abs(time.Since(time.Unix(sec, 0)).Seconds()) > 300 {
		return false // missing, or more than 5 minutes off: a replayed request
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, sig := range strings.Fields(r.Header.Get("webhook-signature")) {
		if hmac.Equal([]byte(sig), []byte(want)) {
			return true
		}
	}
	return false
}

func TestREADMEVerifySnippet(t *testing.T) {
	secret := NewSecret()
	s, _ := NewSigner(secret)
	body := []byte(`{"id":"evt_1","type":"room.started"}`)
	r, _ := http.NewRequest("POST", "http://127.0.0.1/", nil)
	s.SetHeaders(r.Header, "evt_1", time.Now(), body)
	if !readmeVerify(secret, r, body) {
		t.Fatal("the README snippet rejects a good webhook")
	}
	if readmeVerify(secret, r, append(body, ' ')) {
		t.Fatal("the README snippet accepts a tampered body")
	}
	s.SetHeaders(r.Header, "evt_1", time.Now().Add(-6*time.Minute), body)
	if readmeVerify(secret, r, body) {
		t.Fatal("the README snippet accepts an old timestamp")
	}
}

// The README's event section names every type of the catalogue, and marks as pending (*)
// exactly the types other issues build.
func TestREADMEListsCatalogue(t *testing.T) {
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	for _, typ := range sfutest.Catalogue {
		_, pending := sfutest.Pending[typ]
		listed, starred := strings.Contains(readme, "`"+typ+"`"), strings.Contains(readme, "`"+typ+"`*")
		if !listed || starred != pending {
			t.Errorf("README: %s listed %v, marked pending %v; pending %v", typ, listed, starred, pending)
		}
	}
}
