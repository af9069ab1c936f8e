package broadcast

import (
	"errors"
)

// Errors of the broadcaster.
var (
	// ErrNotFound is returned for an unknown broadcast id.
	ErrNotFound = errors.New("broadcast not found")
	// ErrFinished is returned when changing a broadcast that has ended.
	ErrFinished = errors.New("broadcast has ended")
	// ErrInvalid wraps a request that cannot make or change a broadcast.
	ErrInvalid = errors.New("invalid broadcast request")
	// ErrClosed is returned once the manager has stopped.
	ErrClosed = errors.New("broadcasts are shutting down")

	errUnsupportedCodec = errors.New("unsupported codec")
	errRetriesExhausted = errors.New("retries exhausted")
)
