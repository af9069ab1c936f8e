package rtmp

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/yutopp/go-rtmp/handshake"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/rtmpproto"
	"github.com/sluice-media/sluice/sfu/rtmpproto/rtmptest"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// rawSession dials, does the client handshake and returns the connection for raw chunks.
func rawSession(t testing.TB, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := handshake.HandshakeWithServer(conn, conn, &handshake.Config{SkipHandshakeVerification: true}); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn
}

// serverClosed reads until the server closes conn (true) or d passes (false).
func serverClosed(conn net.Conn, d time.Duration) bool {
	_ = conn.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 4096)
	for {
		if _, err := conn.Read(buf); err != nil {
			var ne net.Error
			return !errors.As(err, &ne) || !ne.Timeout()
		}
	}
}

func totalAlloc() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

// Messages that declare huge sizes allocate nothing near what they declare, and close their
// connection. A chunk header's length field has 24 bits, so the largest message one can
// declare is 16 MiB - 1; the 1 GiB declarations an RTMP session can make are a Set Chunk Size
// of 1 GiB and AMF0 values (go-amf0 would make a 2^26-element slice, 1 GiB, for the strict
// array below, and 2^31 elements for the second).
func TestHugeDeclarationsAllocateNothing(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	connect := rtmptest.Connect()
	cases := []struct {
		name  string
		build func(c *rtmptest.Chunker)
	}{
		{"chunk header declaring 16 MiB - 1 (the 24-bit maximum) of video, then 1 MiB of it", func(c *rtmptest.Chunker) {
			c.Header(6, 0, 0xffffff, rtmpproto.TypeVideo, 1)
			c.B = append(c.B, make([]byte, 1<<20)...)
		}},
		{"set chunk size 1 GiB, then a 16 MiB declaration sent in one chunk", func(c *rtmptest.Chunker) {
			c.SetChunkSize(1 << 30)
			c.Header(6, 0, 0xffffff, rtmpproto.TypeVideo, 1)
			c.B = append(c.B, make([]byte, 1<<20)...)
		}},
		{"amf0 strict array of 2^26 elements (1 GiB of slots) in a 20-byte command", func(c *rtmptest.Chunker) {
			c.Msg(3, 0, rtmpproto.TypeCommandAMF0, 0, append(rtmptest.AMF(nil).Str("connect").Num(1), rtmpproto.AMFStrictArray, 0x04, 0, 0, 0, rtmpproto.AMFNull))
		}},
		{"amf0 strict array of 2^31-1 elements inside the connect object", func(c *rtmptest.Chunker) {
			b := append(rtmptest.AMF(nil).Str("connect").Num(1), rtmpproto.AMFObject)
			b = append(b.Key("app"), rtmpproto.AMFStrictArray, 0x7f, 0xff, 0xff, 0xff)
			c.Msg(3, 0, rtmpproto.TypeCommandAMF0, 0, b)
		}},
		{"one message per chunk stream, each declaring 8 MiB", func(c *rtmptest.Chunker) {
			c.Msg(3, 0, rtmpproto.TypeCommandAMF0, 0, connect)
			for cs := 4; cs < 20; cs++ {
				c.Header(cs, 0, 8<<20, rtmpproto.TypeVideo, 1)
				c.B = append(c.B, make([]byte, 128)...)
			}
		}},
		{"command nested 100,000 objects deep", func(c *rtmptest.Chunker) {
			b := append(rtmptest.AMF(nil).Str("connect").Num(1), []byte(strings.Repeat("\x03\x00\x01a", 16000))...)
			c.Msg(3, 0, rtmpproto.TypeCommandAMF0, 0, b)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &rtmptest.Chunker{ChunkSize: 128}
			tc.build(c)
			conn := rawSession(t, h.addr)
			defer conn.Close()
			before := totalAlloc()
			go func() { _, _ = conn.Write(c.B) }() // the server may close before reading it all
			if !serverClosed(conn, 10*time.Second) {
				t.Fatal("the server kept the connection")
			}
			sfutest.WaitFor(t, "the connection to be released", 5*time.Second, func() bool {
				h.srv.mu.Lock()
				defer h.srv.mu.Unlock()
				return len(h.srv.conns) == 0
			})
			if grew := totalAlloc() - before; grew > 4<<20 {
				t.Fatalf("the server allocated %d bytes", grew)
			} else {
				t.Logf("allocated %d bytes in all while refusing it", grew)
			}
		})
	}
	if !strings.Contains(h.Logs.String(), "rtmp protocol violation") {
		t.Error("no violation was logged")
	}
}

// RTMPS: the same server on a TLS port with the configured certificate; the stream's
// protocol is rtmps.
func TestRTMPS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	h := newHarness(t, harnessOptions{config: func(c *Config) {
		c.TLS = TLS{CertFile: certFile, KeyFile: keyFile}
	}})
	if h.srv.TLSAddr() == nil {
		t.Fatal("no rtmps listener")
	}
	c := dialClient(t, h.srv.TLSAddr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	c.mustPublish("secure/cam")
	startFeeder(t, c)
	e := h.WaitEvent("stream.publishing", 10*time.Second, is(sfu.EventStreamPublishing, "cam"))
	if e.Stream.Protocol != sfu.ProtocolRTMPS || e.Participant.Kind != sfu.ParticipantRTMP {
		t.Errorf("stream %+v participant %+v", e.Stream, e.Participant)
	}
	// A plain RTMP client on the TLS port gets nowhere.
	if c, err := tryDial(h.srv.TLSAddr().String(), nil); err == nil {
		c.close()
		t.Error("a plain handshake succeeded on the rtmps port")
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns a pool trusting it.
func selfSigned(t *testing.T) (string, string, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "sluice test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	must(t, err)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	must(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	must(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))
	cert, err := x509.ParseCertificate(der)
	must(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// FuzzRTMPServer feeds mutated sessions into a real server after a valid handshake: the
// server must not panic (in our code or, recovered, in go-rtmp's), must close the connection
// once the client stops sending, and must allocate little for what it was sent.
func FuzzRTMPServer(f *testing.F) {
	f.Add(rtmptest.Session(3, 500)[rtmpproto.HandshakeSize:])
	c := rtmptest.NewChunker()
	c.ChunkSize = 128
	c.Msg(3, 0, rtmpproto.TypeCommandAMF0, 0, rtmptest.Connect())
	c.Msg(3, 0, rtmpproto.TypeCommandAMF0, 0, append(rtmptest.AMF(nil).Str("createStream").Num(2), rtmpproto.AMFNull))
	c.Msg(3, 0, rtmpproto.TypeCommandAMF0, 0, append(rtmptest.AMF(nil).Str("publish").Num(3), append([]byte{rtmpproto.AMFNull}, rtmptest.AMF(nil).Str("fz").Str("live")...)...))
	c.Msg(6, 0, rtmpproto.TypeVideo, 1, rtmptest.ExVideoTag("hvc1", rtmpproto.ExSequenceStart, true, 0, rtmptest.HEVCConfigRecord([]byte{0x40, 1, 2}, []byte{0x42, 1, 2}, []byte{0x44, 1, 2})))
	c.Msg(6, 33, rtmpproto.TypeVideo, 1, rtmptest.ExVideoTag("hvc1", rtmpproto.ExCodedFrames, true, 10, rtmptest.LengthPrefixed([]byte{0x26, 1, 2, 3})))
	c.Msg(6, 66, rtmpproto.TypeVideo, 1, rtmptest.ExVideoTag("av01", rtmpproto.ExCodedFramesX, true, 0, []byte{0x0a, 0x01, 0x00, 0x32, 0x02, 0x10, 0x20}))
	c.Msg(4, 0, rtmpproto.TypeAudio, 1, []byte{0x90 | rtmpproto.ExCodedFrames, 'O', 'p', 'u', 's', 0xfc, 0xff, 0xfe})
	f.Add(c.B[rtmpproto.HandshakeSize:])
	f.Fuzz(func(t *testing.T, b []byte) {
		h := newHarness(t, harnessOptions{config: func(c *Config) { c.MaxMessageSize = 64 << 10 }})
		conn := rawSession(t, h.addr)
		defer conn.Close()
		before := totalAlloc()
		if _, err := conn.Write(b); err == nil {
			_ = conn.(*net.TCPConn).CloseWrite()
		}
		if !serverClosed(conn, 15*time.Second) {
			t.Fatal("the server did not close the connection after the client stopped sending")
		}
		sfutest.WaitFor(t, "the connection to be released", 10*time.Second, func() bool {
			h.srv.mu.Lock()
			defer h.srv.mu.Unlock()
			return len(h.srv.conns) == 0
		})
		if grew := totalAlloc() - before; grew > 8<<20+uint64(200*len(b)) {
			t.Fatalf("the server allocated %d bytes for %d bytes of input", grew, len(b))
		}
		if n := h.srv.panics.Load(); n > 0 {
			t.Fatalf("%d panics in our code:\n%s", n, h.Logs.String())
		}
		if strings.Contains(h.Logs.String(), "Panic") {
			t.Fatalf("go-rtmp recovered a panic:\n%s", h.Logs.String())
		}
	})
}
