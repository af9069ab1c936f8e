package rtmp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/sluice-media/sluice/egress/egresstest"
	"github.com/sluice-media/sluice/sfu/rtmpproto"
)

// tlsFront terminates TLS on a loopback port and forwards to addr, as an RTMPS ingest does.
// It uses httptest's certificate for 127.0.0.1 and returns the port and a pool trusting it.
func tlsFront(t *testing.T, addr string) (int, *x509.CertPool) {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	srv.StartTLS()
	cfg := srv.TLS.Clone()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	srv.Close()
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				up, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port, pool
}

// TestPublishRTMPS publishes over TLS (server name from the URL, the given roots), and a
// certificate the client does not trust fails the setup with a verification error.
func TestPublishRTMPS(t *testing.T) {
	p := egresstest.StartPlatform(t, egresstest.PlatformOptions{})
	port, pool := tlsFront(t, fmt.Sprintf("127.0.0.1:%d", p.Port))
	target, err := ParseURL(fmt.Sprintf("rtmps://127.0.0.1:%d/live/sk-tls-424242", port))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Publish(context.Background(), target, Options{TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WriteAudio(0, nil, rtmpproto.AACSequenceHeader([]byte{0x11, 0x90})); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()

	_, err = Publish(context.Background(), target, Options{}) // system roots: not trusted
	var verify *tls.CertificateVerificationError
	if !errors.As(err, &verify) {
		t.Fatalf("untrusted certificate: %v", err)
	}
	if strings.Contains(err.Error(), "sk-tls-424242") {
		t.Errorf("the error shows the key: %v", err)
	}
}
