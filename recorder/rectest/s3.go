package rectest

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3 credentials and bucket of the test server.
const (
	S3AccessKey = "sluicetestkey"
	S3SecretKey = "sluice-test-secret-0123456789"
	S3Bucket    = "recordings"
)

var (
	s3Once sync.Once
	s3Bin  string
	s3Err  error
)

// s3Binary builds the test S3 server (recorder/internal/s3server) once per test process.
func s3Binary(t testing.TB) string {
	t.Helper()
	s3Once.Do(func() {
		dir, err := os.MkdirTemp("", "sluice-s3server-")
		if err != nil {
			s3Err = err
			return
		}
		s3Bin = filepath.Join(dir, "s3server")
		out, err := exec.Command("go", "build", "-o", s3Bin, "github.com/sluice-media/sluice/recorder/internal/s3server").CombinedOutput() //nolint:gosec // fixed arguments
		if err != nil {
			s3Err = &buildError{out: string(out), err: err}
		}
	})
	if s3Err != nil {
		t.Fatalf("building the test S3 server: %v", s3Err)
	}
	return s3Bin
}

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return e.err.Error() + ": " + e.out }

// S3Server is an S3-compatible server (gofakes3 over a directory, with SigV4 and payload
// checks) running as its own process on loopback. Objects survive Kill and Start.
type S3Server struct {
	t    testing.TB
	Dir  string
	Addr string

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	requests []string
}

// StartS3 builds and starts the server; throttle (bytes a second, 0 for none) slows uploads
// so that a test can interrupt one. The server is killed at the end of the test.
func StartS3(t testing.TB, throttle int) *S3Server {
	t.Helper()
	s := &S3Server{t: t, Dir: t.TempDir(), Addr: "127.0.0.1:0"}
	s.Start(throttle)
	t.Cleanup(s.Kill)
	return s
}

// Start (re)starts the process on the same address and directory.
func (s *S3Server) Start(throttle int) {
	s.t.Helper()
	bin := s3Binary(s.t)
	args := []string{"-addr", s.Addr, "-dir", s.Dir, "-access-key", S3AccessKey, "-secret-key", S3SecretKey, "-bucket", S3Bucket}
	if throttle > 0 {
		args = append(args, "-throttle", strconv.Itoa(throttle))
	}
	cmd := exec.Command(bin, args...) //nolint:gosec // the test server built above
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	ready := make(chan string, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if a, ok := strings.CutPrefix(line, "listening "); ok {
				ready <- a
				continue
			}
			s.mu.Lock()
			s.requests = append(s.requests, line)
			s.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
	}()
	select {
	case a := <-ready:
		s.mu.Lock()
		s.Addr, s.cmd, s.done = a, cmd, done
		s.mu.Unlock()
	case <-done:
		s.t.Fatal("the test S3 server exited at start")
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		s.t.Fatal("the test S3 server did not start")
	}
}

// Kill stops the process at once (SIGKILL) and waits for it.
func (s *S3Server) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Requests returns the lines the server printed per request ("request PUT /bucket/key",
// "rejected …").
func (s *S3Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

// Client returns a client with the right credentials.
func (s *S3Server) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(s.Addr, &minio.Options{Creds: credentials.NewStaticV4(S3AccessKey, S3SecretKey, ""), Secure: false})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Objects lists the bucket's object keys and sizes.
func (s *S3Server) Objects(t testing.TB) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for o := range s.Client(t).ListObjects(context.Background(), S3Bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		out[o.Key] = o.Size
	}
	return out
}

// Download copies an object to a local file.
func (s *S3Server) Download(t testing.TB, key, dst string) {
	t.Helper()
	if err := s.Client(t).FGetObject(context.Background(), S3Bucket, key, dst, minio.GetObjectOptions{}); err != nil {
		t.Fatal(err)
	}
}
