package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The daemon comes back after a crash (kill -9) on the same ports and data dir, and its CLI
// reports failures as one line with a non-zero exit.
func TestRestartAfterKillAndCLIErrors(t *testing.T) {
	d := startDaemon(t, "")
	if out, err := d.cli("ingest", "create", "rtmp", "--room", "studio"); err != nil || !strings.Contains(out, "Stream Key: sk_") {
		t.Fatalf("ingest create: %v\n%s", err, out)
	}
	d.kill()
	d.start()
	out, err := d.cli("ingest", "list", "-o", "json")
	if err != nil {
		t.Fatalf("after restart: %v\n%s", err, out)
	}
	var list struct {
		Ingests []struct{ Room, StreamKey string } `json:"ingests"`
	}
	if json.Unmarshal([]byte(out), &list) != nil || len(list.Ingests) != 1 || list.Ingests[0].Room != "studio" {
		t.Fatalf("the ingest did not survive the crash: %s", out)
	}
	if list.Ingests[0].StreamKey != "" {
		t.Fatal("a listing shows the stream key")
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"rooms", "show", "nowhere"}, `room "nowhere" not found`},
		{[]string{"rooms", "kick", "nowhere", "x"}, "not found"},
		{[]string{"rooms", "send", "nowhere", "--data", "x"}, "not found"},
		{[]string{"token", "create", "--room", "r", "--publish"}, "open mode"},
		{[]string{"status", "-o", "yaml"}, "--output must be text or json"},
		{[]string{"--server", "http://127.0.0.1:1", "status"}, "cannot reach the daemon"},
	} {
		out, err := d.cli(tc.args...)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if err == nil || len(lines) != 1 || !strings.Contains(out, tc.want) || !strings.HasPrefix(out, "sluice: ") {
			t.Errorf("sluice %v: err=%v output %q; want one line with %q", tc.args, err, out, tc.want)
		}
	}

	// A bad config file is refused with file, line and key.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("http:\n  lisen: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = runSluice("serve", "--config", bad)
	if err == nil || !strings.Contains(out, "bad.yaml:2: http.lisen: unknown key") {
		t.Fatalf("bad config: %v %q", err, out)
	}
}

// A port in use is a clear startup error, not a crash, and releases what was bound before it.
func TestPortInUse(t *testing.T) {
	d := startDaemon(t, "")
	cfg := strings.Replace(readFile(t, d.config), filepath.Join(d.dir, "data"), filepath.Join(t.TempDir(), "data"), 1)
	second := filepath.Join(t.TempDir(), "second.yaml")
	if err := os.WriteFile(second, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runSluice("serve", "--config", second)
	if err == nil || strings.Contains(out, "panic") || !strings.Contains(out, "address already in use") {
		t.Fatalf("second daemon on the same ports: %v\n%s", err, out)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
