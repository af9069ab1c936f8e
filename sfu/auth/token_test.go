package auth

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const secret = "0123456789abcdef0123456789abcdef"

func TestSignVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	v := NewVerifier(Config{Keys: map[string]string{"app": secret}}, func() time.Time { return now })
	good, err := Sign("app", secret, Claims{Identity: "alice", ExpiresAt: now.Add(time.Hour).Unix(), Grants: Grants{Room: "r", Publish: true}})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := Sign("app", strings.Repeat("x", 32), Claims{ExpiresAt: now.Add(time.Hour).Unix()})
	unknown, _ := Sign("nope", secret, Claims{ExpiresAt: now.Add(time.Hour).Unix()})
	expired, _ := Sign("app", secret, Claims{ExpiresAt: now.Add(-time.Second).Unix()})
	noExp, _ := Sign("app", secret, Claims{})
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + strings.TrimRight(parts[1], "=") + "x." + parts[2]
	none := "eyJhbGciOiJub25lIn0." + parts[1] + "."

	for _, tc := range []struct {
		name   string
		token  string
		err    error
		reason string
	}{
		{"good", good, nil, ""},
		{"missing", "", ErrMissingToken, "missing_token"},
		{"garbage", "abc", ErrInvalidToken, "invalid_token"},
		{"wrong secret", other, ErrInvalidToken, "invalid_token"},
		{"unknown key", unknown, ErrInvalidToken, "invalid_token"},
		{"expired", expired, ErrExpiredToken, "expired_token"},
		{"no exp", noExp, ErrInvalidToken, "invalid_token"},
		{"tampered", tampered, ErrInvalidToken, "invalid_token"},
		{"alg none", none, ErrInvalidToken, "invalid_token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := v.Verify(tc.token)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if err != nil {
				if Reason(err) != tc.reason {
					t.Fatalf("reason %q", Reason(err))
				}
				if strings.Contains(err.Error(), secret) {
					t.Fatal("secret in error")
				}
				return
			}
			if c.Identity != "alice" || c.Issuer != "app" || !c.Allows(ActionPublish, "r") {
				t.Fatalf("claims %+v", c)
			}
		})
	}
}

func TestAllows(t *testing.T) {
	for _, tc := range []struct {
		g      Grants
		action Action
		room   string
		want   bool
	}{
		{Grants{Room: "a", Publish: true}, ActionPublish, "a", true},
		{Grants{Room: "a", Publish: true}, ActionPublish, "b", false},
		{Grants{Room: "a", Publish: true}, ActionSubscribe, "a", false},
		{Grants{Room: "a", Subscribe: true}, ActionSubscribe, "a", true},
		{Grants{Publish: true}, ActionPublish, "a", false},
		{Grants{Admin: true}, ActionPublish, "any", true},
		{Grants{Admin: true}, ActionAdmin, "", true},
		{Grants{Room: "a", Admin: true}, ActionAdmin, "", false},
		{Grants{Room: "a", Publish: true, Subscribe: true}, ActionAdmin, "a", false},
	} {
		c := &Claims{Grants: tc.g}
		if got := c.Allows(tc.action, tc.room); got != tc.want {
			t.Errorf("%+v Allows(%d, %q) = %v", tc.g, tc.action, tc.room, got)
		}
	}
}

func FuzzVerify(f *testing.F) {
	tok, _ := Sign("app", secret, Claims{ExpiresAt: 2_000_000_000})
	f.Add(tok)
	f.Add("a.b.c")
	v := NewVerifier(Config{Keys: map[string]string{"app": secret}}, nil)
	f.Fuzz(func(t *testing.T, s string) {
		c, err := v.Verify(s)
		if err == nil && c.Issuer != "app" {
			t.Fatalf("verified a token of issuer %q", c.Issuer)
		}
	})
}

// A token that lives longer than max_token_lifetime is refused, however well it is signed.
func TestVerifyRefusesLongLifetimes(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	v := NewVerifier(Config{Keys: map[string]string{"app": secret}, MaxTokenLifetime: 24 * time.Hour}, clock)
	def := NewVerifier(Config{Keys: map[string]string{"app": secret}}, clock)
	year30000 := time.Date(30000, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	for _, tc := range []struct {
		name   string
		v      *Verifier
		claims Claims
		ok     bool
	}{
		{"a day", v, Claims{IssuedAt: now.Unix(), ExpiresAt: now.Add(24 * time.Hour).Unix()}, true},
		{"a day and a minute", v, Claims{IssuedAt: now.Unix(), ExpiresAt: now.Add(24*time.Hour + time.Minute).Unix()}, false},
		{"issued long ago, living long", v, Claims{IssuedAt: now.Add(-48 * time.Hour).Unix(), ExpiresAt: now.Add(time.Hour).Unix()}, false},
		{"no iat, far exp", v, Claims{ExpiresAt: now.Add(48 * time.Hour).Unix()}, false},
		{"year 30000, default maximum", def, Claims{IssuedAt: now.Unix(), ExpiresAt: year30000}, false},
		{"a year, default maximum", def, Claims{IssuedAt: now.Unix(), ExpiresAt: now.Add(365 * 24 * time.Hour).Unix()}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := Sign("app", secret, tc.claims)
			if err != nil {
				t.Fatal(err)
			}
			_, err = tc.v.Verify(tok)
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalidToken)) {
				t.Fatalf("err = %v, want ok=%t", err, tc.ok)
			}
		})
	}
}
