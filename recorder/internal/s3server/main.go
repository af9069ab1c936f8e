// Command s3server is the S3-compatible server of the recorder's object storage tests: gofakes3
// (MIT) over a directory, so objects survive a restart, behind a check of every request's AWS
// Signature Version 4 and of its payload's SHA-256. Tests build it from the module cache and run
// it as its own process; the daemon never imports it.
//
//	s3server -addr 127.0.0.1:0 -dir DIR -access-key AK -secret-key SK [-bucket B] [-throttle BYTES/S]
//
// It prints "listening ADDR" once it accepts connections, and "request METHOD PATH" as each
// request arrives, so a test can kill it in the middle of an upload.
package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3afero"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	dir := flag.String("dir", "", "directory holding the buckets (required)")
	ak := flag.String("access-key", "", "the one access key accepted (required)")
	sk := flag.String("secret-key", "", "its secret key (required)")
	bucket := flag.String("bucket", "", "bucket to create at start")
	throttle := flag.Int("throttle", 0, "read request bodies at most this many bytes a second (0: no limit)")
	flag.Parse()
	if err := run(*addr, *dir, *ak, *sk, *bucket, *throttle); err != nil {
		fmt.Fprintln(os.Stderr, "s3server:", err)
		os.Exit(1)
	}
}

func run(addr, dir, ak, sk, bucket string, throttle int) error {
	if dir == "" || ak == "" || sk == "" {
		return fmt.Errorf("-dir, -access-key and -secret-key are required")
	}
	fs, err := s3afero.FsPath(dir, s3afero.FsPathCreateAll)
	if err != nil {
		return err
	}
	backend, err := s3afero.MultiBucket(fs)
	if err != nil {
		return err
	}
	if bucket != "" {
		if ok, _ := backend.BucketExists(bucket); !ok {
			if err := backend.CreateBucket(bucket); err != nil {
				return err
			}
		}
	}
	s3 := gofakes3.New(backend, gofakes3.WithIntegrityCheck(true))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("listening %s\n", ln.Addr())
	v := &verifier{ak: ak, sk: sk, next: s3.Server(), throttle: throttle}
	srv := &http.Server{Handler: v, ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(ln)
}

// verifier checks the SigV4 Authorization header (RFC-less: AWS "Signature Version 4 signing
// process") and the payload hash before passing the request on.
type verifier struct {
	ak, sk   string
	next     http.Handler
	throttle int
}

func (v *verifier) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fmt.Printf("request %s %s\n", r.Method, r.URL.Path)
	body, err := v.read(r)
	if err != nil {
		s3Error(w, http.StatusBadRequest, "IncompleteBody", err.Error())
		return
	}
	if code, msg := v.check(r, body); code != "" {
		fmt.Printf("rejected %s %s: %s\n", r.Method, r.URL.Path, code)
		status := http.StatusForbidden
		if code == "XAmzContentSHA256Mismatch" {
			status = http.StatusBadRequest
		}
		s3Error(w, status, code, msg)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	v.next.ServeHTTP(w, r)
}

// read takes the whole body, slowly when throttled.
func (v *verifier) read(r *http.Request) ([]byte, error) {
	if v.throttle <= 0 {
		return io.ReadAll(r.Body)
	}
	var buf bytes.Buffer
	chunk := max(v.throttle/10, 1)
	for {
		n, err := io.CopyN(&buf, r.Body, int64(chunk))
		if errors.Is(err, io.EOF) || (err == nil && n < int64(chunk)) {
			return buf.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (v *verifier) check(r *http.Request, body []byte) (code, msg string) {
	auth := r.Header.Get("Authorization")
	const algo = "AWS4-HMAC-SHA256 "
	if !strings.HasPrefix(auth, algo) {
		return "AccessDenied", "only AWS4-HMAC-SHA256 header signatures are accepted"
	}
	fields := map[string]string{}
	for _, kv := range strings.Split(auth[len(algo):], ",") {
		k, val, _ := strings.Cut(strings.TrimSpace(kv), "=")
		fields[k] = val
	}
	cred := strings.Split(fields["Credential"], "/")
	if len(cred) != 5 {
		return "AuthorizationHeaderMalformed", "bad Credential"
	}
	if cred[0] != v.ak {
		return "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."
	}
	date := r.Header.Get("X-Amz-Date")
	payload := r.Header.Get("X-Amz-Content-Sha256")
	if len(payload) == 64 {
		sum := sha256.Sum256(body)
		if hex.EncodeToString(sum[:]) != payload {
			return "XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match what was computed."
		}
	}
	signed := strings.Split(fields["SignedHeaders"], ";")
	var ch strings.Builder
	for _, h := range signed {
		val := strings.Join(r.Header.Values(h), ",")
		if h == "host" {
			val = r.Host
		}
		ch.WriteString(h + ":" + strings.TrimSpace(val) + "\n")
	}
	canonical := strings.Join([]string{r.Method, r.URL.EscapedPath(), canonicalQuery(r.URL.Query()), ch.String(), fields["SignedHeaders"], payload}, "\n")
	scope := strings.Join(cred[1:], "/")
	hash := sha256.Sum256([]byte(canonical))
	toSign := "AWS4-HMAC-SHA256\n" + date + "\n" + scope + "\n" + hex.EncodeToString(hash[:])
	key := []byte("AWS4" + v.sk)
	for _, part := range cred[1:] {
		key = hmacSHA256(key, part)
	}
	want := hex.EncodeToString(hmacSHA256(key, toSign))
	if !hmac.Equal([]byte(want), []byte(fields["Signature"])) {
		return "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. Check your key and signing method."
	}
	return "", ""
}

func canonicalQuery(q url.Values) string {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		vals := append([]string(nil), q[k]...)
		sort.Strings(vals)
		for _, val := range vals {
			parts = append(parts, escape(k)+"="+escape(val))
		}
	}
	return strings.Join(parts, "&")
}

func escape(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

func s3Error(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message></Error>`, code, msg)
}
