package rtc

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// loggerFactory bridges pion's leveled loggers into slog. pion's info is chatty and goes to
// debug; trace is dropped.
type loggerFactory struct{ log *slog.Logger }

func (f *loggerFactory) NewLogger(scope string) logging.LeveledLogger {
	return &pionLogger{log: f.log.With("pion", scope)}
}

type pionLogger struct{ log *slog.Logger }

func (l *pionLogger) at(level slog.Level, msg string) {
	l.log.Log(context.Background(), level, msg)
}

func (l *pionLogger) Trace(string)                 {}
func (l *pionLogger) Tracef(string, ...any)        {}
func (l *pionLogger) Debug(msg string)             { l.at(slog.LevelDebug, msg) }
func (l *pionLogger) Debugf(f string, args ...any) { l.at(slog.LevelDebug, fmt.Sprintf(f, args...)) }
func (l *pionLogger) Info(msg string)              { l.at(slog.LevelDebug, msg) }
func (l *pionLogger) Infof(f string, args ...any)  { l.at(slog.LevelDebug, fmt.Sprintf(f, args...)) }
func (l *pionLogger) Warn(msg string)              { l.at(slog.LevelWarn, msg) }
func (l *pionLogger) Warnf(f string, args ...any)  { l.at(slog.LevelWarn, fmt.Sprintf(f, args...)) }
func (l *pionLogger) Error(msg string)             { l.at(slog.LevelError, msg) }
func (l *pionLogger) Errorf(f string, args ...any) { l.at(slog.LevelError, fmt.Sprintf(f, args...)) }
