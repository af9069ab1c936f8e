package rtmp

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu/netguard"
)

// fakeServer listens on loopback and treats each connection with serve; it stops with the test.
func fakeServer(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			serve(c)
		}
	}()
	return ln.Addr().String()
}

// A broadcast cannot tell a closed port from an open one: whatever answers (or does not) where
// no RTMP server is, the error is ErrNoServer with the same text, port aside; the outbound
// policy's refusal is still its own.
func TestPublishNoServerErrorsAreAlike(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	held := make(chan net.Conn, 16)
	t.Cleanup(func() {
		close(held)
		for c := range held {
			c.Close()
		}
	})
	ssh := fakeServer(t, func(c net.Conn) { _, _ = c.Write([]byte("SSH-2.0-OpenSSH_9.6\r\n")); c.Close() })
	hangup := fakeServer(t, func(c net.Conn) { c.Close() })
	silent := fakeServer(t, func(c net.Conn) { held <- c })
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer web.Close()
	webAddr := strings.TrimPrefix(web.URL, "http://")

	opts := Options{Timeout: time.Second, Dial: netguard.New(netguard.Config{AllowLoopback: true}).DialContext}
	var first string
	for _, tc := range []struct{ name, url, addr string }{
		{"closed port", "rtmp://" + closed + "/live/k", closed},
		{"ssh banner", "rtmp://" + ssh + "/live/k", ssh},
		{"immediate close", "rtmp://" + hangup + "/live/k", hangup},
		{"silent", "rtmp://" + silent + "/live/k", silent},
		{"http server", "rtmp://" + webAddr + "/live/k", webAddr},
		{"rtmps to a closed port", "rtmps://" + closed + "/live/k", closed},
		{"rtmps to an ssh banner", "rtmps://" + ssh + "/live/k", ssh},
		{"rtmps to an http server", "rtmps://" + webAddr + "/live/k", webAddr},
	} {
		target, err := ParseURL(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Publish(context.Background(), target, opts)
		if !errors.Is(err, ErrNoServer) {
			t.Errorf("%s: %v, want ErrNoServer", tc.name, err)
			continue
		}
		msg := strings.ReplaceAll(err.Error(), tc.addr, "ADDR")
		if first == "" {
			first = msg
		}
		if msg != first {
			t.Errorf("%s: %q, but a closed port gives %q", tc.name, msg, first)
		}
	}

	target, _ := ParseURL("rtmp://" + ssh + "/live/k")
	_, err = Publish(context.Background(), target, Options{Timeout: time.Second, Dial: netguard.New(netguard.DefaultConfig()).DialContext})
	if !errors.Is(err, netguard.ErrRefused) || errors.Is(err, ErrNoServer) {
		t.Errorf("loopback under the default policy: %v, want the policy's refusal", err)
	}
}
