package rtmp

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"
)

// go-rtmp logs through logrus. Its Info messages print commands with their arguments
// ("Publisher is comming: {PublishingName: <stream key>}"), so only its warnings and errors
// are bridged into slog, at debug level, with the publisher's stream names redacted. The last
// error it logs for a connection ("Server closed by error: …") says why go-rtmp ended the
// session when neither the guard nor our handler did.

// libLog is the per-connection bridge from go-rtmp's logger to slog.
type libLog struct {
	log *slog.Logger

	mu      sync.Mutex
	secrets []string
	lastErr string
}

// newLibLogger returns the logrus logger go-rtmp gets for one connection.
func newLibLogger(b *libLog) *logrus.Logger {
	l := logrus.New()
	l.Out = io.Discard
	l.Formatter = nopFormatter{}
	l.Level = logrus.WarnLevel // Info and Debug entries are dropped before formatting
	l.Hooks.Add(b)
	return l
}

// redact registers a string (a stream name) that must not appear in bridged messages.
func (b *libLog) redact(s string) {
	if s == "" {
		return
	}
	b.mu.Lock()
	b.secrets = append(b.secrets, s)
	b.mu.Unlock()
}

// LastError returns the first line of the last error go-rtmp logged, redacted.
func (b *libLog) LastError() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lastErr
}

// Levels implements logrus.Hook.
func (b *libLog) Levels() []logrus.Level {
	return []logrus.Level{logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel, logrus.WarnLevel}
}

// Fire implements logrus.Hook.
func (b *libLog) Fire(e *logrus.Entry) error {
	msg, _, _ := strings.Cut(e.Message, "\n") // %+v errors carry stack traces
	b.mu.Lock()
	for _, s := range b.secrets {
		msg = strings.ReplaceAll(msg, s, "***")
	}
	if len(msg) > 300 {
		msg = msg[:300] + "…"
	}
	if e.Level <= logrus.ErrorLevel {
		b.lastErr = msg
	}
	b.mu.Unlock()
	if b.log.Enabled(context.Background(), slog.LevelDebug) {
		b.log.Debug("go-rtmp", "level", e.Level.String(), "msg", msg)
	}
	return nil
}

type nopFormatter struct{}

func (nopFormatter) Format(*logrus.Entry) ([]byte, error) { return nil, nil }
