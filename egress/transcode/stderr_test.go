package transcode

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// StderrTail keeps the last lines whole across writes that split them, a progress line ended
// by a carriage return included, and quotes them for an error.
func TestStderrTail(t *testing.T) {
	tail := &StderrTail{Log: slog.New(slog.DiscardHandler)}
	if tail.String() != "" {
		t.Fatalf("empty tail says %q", tail.String())
	}
	for i := range 20 {
		line := fmt.Sprintf("line %d\n", i)
		_, _ = tail.Write([]byte(line[:3]))
		_, _ = tail.Write([]byte(line[3:]))
	}
	_, _ = tail.Write([]byte("frame=  1 fps=0\rframe=  2 fps=0\r\n"))
	got := tail.String()
	want := ": " + strings.Join([]string{"line 14", "line 15", "line 16", "line 17", "line 18", "line 19", "frame=  1 fps=0", "frame=  2 fps=0"}, " | ")
	if got != want {
		t.Fatalf("tail %q, want %q", got, want)
	}
}
