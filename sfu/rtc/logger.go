package rtc

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/pion/logging"
)

// loggerFactory bridges pion's leveled loggers into slog. pion's info is chatty and goes to
// debug; trace is dropped. pion's warnings are per session and per packet ("Failed to ping
// without candidate pairs" every 200 ms of a session that never runs ICE, closed-pipe reads at
// every normal end), so they go to debug too and are counted in
// sluice_webrtc_pion_warnings_total; what the operator needs to know the sessions log
// themselves. Errors stay errors.
type loggerFactory struct {
	log      *slog.Logger
	warnings *atomic.Uint64
}

func (f *loggerFactory) NewLogger(scope string) logging.LeveledLogger {
	return &pionLogger{log: f.log.With("pion", scope), warnings: f.warnings}
}

type pionLogger struct {
	log      *slog.Logger
	warnings *atomic.Uint64
}

func (l *pionLogger) warn(msg string) {
	l.warnings.Add(1)
	l.at(slog.LevelDebug, msg)
}

func (l *pionLogger) at(level slog.Level, msg string) {
	l.log.Log(context.Background(), level, msg)
}

func (l *pionLogger) Trace(string)                 {}
func (l *pionLogger) Tracef(string, ...any)        {}
func (l *pionLogger) Debug(msg string)             { l.at(slog.LevelDebug, msg) }
func (l *pionLogger) Debugf(f string, args ...any) { l.at(slog.LevelDebug, fmt.Sprintf(f, args...)) }
func (l *pionLogger) Info(msg string)              { l.at(slog.LevelDebug, msg) }
func (l *pionLogger) Infof(f string, args ...any)  { l.at(slog.LevelDebug, fmt.Sprintf(f, args...)) }
func (l *pionLogger) Warn(msg string)              { l.warn(msg) }
func (l *pionLogger) Warnf(f string, args ...any)  { l.warn(fmt.Sprintf(f, args...)) }
func (l *pionLogger) Error(msg string)             { l.at(slog.LevelError, msg) }
func (l *pionLogger) Errorf(f string, args ...any) { l.at(slog.LevelError, fmt.Sprintf(f, args...)) }
