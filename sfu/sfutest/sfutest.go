// Package sfutest holds helpers shared by tests of several packages: external tools that a
// test needs, and waiting for conditions with a deadline. It is imported only by tests.
package sfutest

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// RequireTool returns the path of an external program a test needs. When it is missing the
// test is skipped, except under CI=true, where it fails: CI must install what tests need.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required under CI=true but is not installed (.ci/run installs it): %v", name, err)
	}
	t.Skipf("%s is not installed; install it (see .ci/run) to run this test", name)
	return ""
}

// WaitFor polls cond every 10 ms until it holds, failing the test after d.
func WaitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
