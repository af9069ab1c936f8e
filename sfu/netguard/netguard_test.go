package netguard

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestPolicy(t *testing.T) {
	def := New(DefaultConfig(), 8800)
	loop := New(Config{AllowLoopback: true, AllowPrivate: true, Deny: []string{"10.9.0.0/16", "192.0.2.7"}}, 8800)
	strict := New(Config{})
	for _, tc := range []struct {
		p    *Policy
		addr string
		want bool
	}{
		{def, "169.254.169.254:80", false},
		{def, "[fe80::1]:554", false},
		{def, "[fd00:ec2::254]:80", false},
		{def, "[::ffff:169.254.169.254]:80", false},
		{def, "127.0.0.1:554", false},
		{def, "[::1]:554", false},
		{def, "0.0.0.0:554", false},
		{def, "10.0.0.5:554", true},
		{def, "203.0.113.9:1935", true},
		{strict, "192.168.1.10:554", false},
		{strict, "203.0.113.9:1935", true},
		{loop, "127.0.0.1:554", true},
		{loop, "127.0.0.1:8800", false}, // the daemon's own port
		{loop, "[::1]:8800", false},
		{loop, "10.9.3.4:554", false},
		{loop, "192.0.2.7:554", false},
		{loop, "169.254.169.254:80", false},
	} {
		if got := tc.p.Allowed(netip.MustParseAddrPort(tc.addr)); got != tc.want {
			t.Errorf("%s: allowed %t, want %t", tc.addr, got, tc.want)
		}
	}
}

// A refused address and a closed port fail at dial time without saying why the network
// refused; the policy's refusal says it is the policy.
func TestDialErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	p := New(Config{AllowLoopback: true})
	_, err = p.DialContext(context.Background(), "tcp", closed)
	if !errors.Is(err, ErrUnreachable) || strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), closed) {
		t.Fatalf("closed port: %v", err)
	}
	_, err = New(DefaultConfig()).DialContext(context.Background(), "tcp", closed)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "not allowed") {
		t.Fatalf("loopback under the default policy: %v", err)
	}
}
