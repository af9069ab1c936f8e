package configs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds arbitrary files to the loader: it returns a config or an *Error naming where,
// never panics.
func FuzzLoad(f *testing.F) {
	f.Add("http:\n  listen: \":9000\"\n")
	f.Add("webrtc: {port: [1,2]}\n")
	f.Add("ingests:\n  - {id: a, type: rtsp_pull, room: r, url: \"rtsp://h/s\"}\n")
	f.Add("a: &x {b: *x}\n")
	f.Add("rooms:\n  empty_timeout: 1e309h\n")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, body string) {
		p := filepath.Join(dir, "f.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(Options{File: p, Env: noEnv})
		var ce *Error
		if err != nil && !errors.As(err, &ce) {
			t.Fatalf("not a located error: %v", err)
		}
	})
}
