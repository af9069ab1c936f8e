// Package api is the daemon's HTTP API: JSON and error conventions, the auth gate that every
// route uses, and the core routes (status, rooms, tokens, health, metrics). Edge packages
// mount their own routes on the Server with the same helpers.
package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strings"

	"github.com/sluice-media/sluice/sfu"
)

// MaxJSONBody bounds a JSON request body.
const MaxJSONBody = 1 << 20

// Error is an API error: the body {"error":{"code","message"}} and its HTTP status.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf builds an Error.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Common error codes.
const (
	CodeBadRequest       = "bad_request"
	CodeInvalidJSON      = "invalid_json"
	CodeTooLarge         = "body_too_large"
	CodeUnsupportedMedia = "unsupported_media_type"
	CodeNotFound         = "not_found"
	CodeConflict         = "conflict"
	CodeUnauthorized     = "unauthorized"
	CodeForbidden        = "forbidden"
	CodeInternal         = "internal"
	CodeUnavailable      = "unavailable"
	CodeTimeout          = "timeout"
	// CodeOverloaded refuses a new session while the daemon is at its CPU or memory budget
	// (503 with Retry-After).
	CodeOverloaded = "overloaded"
)

// overloadRetryAfter is the Retry-After of an overloaded refusal, in seconds.
const overloadRetryAfter = "10"

// WriteJSON writes v with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client may be gone; nothing to do about it
}

// WriteError writes err as an API error; errors that are not *Error become 500 with a generic
// message (their text may hold internals).
func WriteError(w http.ResponseWriter, err error) {
	var e *Error
	switch {
	case errors.As(err, &e):
	case errors.Is(err, sfu.ErrOverloaded):
		e = &Error{Status: http.StatusServiceUnavailable, Code: CodeOverloaded, Message: err.Error()}
	default:
		e = &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: "internal error"}
	}
	if e.Code == CodeOverloaded {
		w.Header().Set("Retry-After", overloadRetryAfter)
	}
	WriteJSON(w, e.Status, map[string]*Error{"error": e})
}

// DecodeJSON reads a JSON body of at most MaxJSONBody bytes into v, refusing unknown fields,
// trailing data and a missing or other content type with a precise *Error. (Requiring
// application/json keeps a foreign page's form or no-cors fetch from reaching a handler.)
func DecodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return Errorf(http.StatusUnsupportedMediaType, CodeUnsupportedMedia, "content type must be application/json")
	}
	body := http.MaxBytesReader(w, r.Body, MaxJSONBody)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if dec.More() {
		return Errorf(http.StatusBadRequest, CodeInvalidJSON, "body has data after the JSON value")
	}
	return nil
}

func jsonError(err error) error {
	var tooBig *http.MaxBytesError
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooBig):
		return Errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "body larger than %d bytes", tooBig.Limit)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return Errorf(http.StatusRequestTimeout, CodeTimeout, "the body did not arrive within http.body_timeout")
	case errors.Is(err, io.EOF):
		return Errorf(http.StatusBadRequest, CodeInvalidJSON, "body is empty")
	case errors.As(err, &syn):
		return Errorf(http.StatusBadRequest, CodeInvalidJSON, "malformed JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return Errorf(http.StatusBadRequest, CodeInvalidJSON, "field %q must be %s", typ.Field, typ.Type)
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return Errorf(http.StatusBadRequest, CodeInvalidJSON, "%s", strings.TrimPrefix(err.Error(), "json: "))
	}
	return Errorf(http.StatusBadRequest, CodeInvalidJSON, "malformed JSON")
}

// ReadBody reads a non-JSON body (SDP) of at most limit bytes with the given content type.
func ReadBody(w http.ResponseWriter, r *http.Request, contentType string, limit int64) ([]byte, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != contentType {
		return nil, Errorf(http.StatusUnsupportedMediaType, CodeUnsupportedMedia, "content type must be %s", contentType)
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, Errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "body larger than %d bytes", limit)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, Errorf(http.StatusRequestTimeout, CodeTimeout, "the body did not arrive within http.body_timeout")
		}
		return nil, Errorf(http.StatusBadRequest, CodeBadRequest, "reading body: %v", err)
	}
	return data, nil
}
