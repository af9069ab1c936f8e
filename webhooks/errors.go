package webhooks

import "errors"

// Verification errors.
var (
	ErrMissingHeaders   = errors.New("missing webhook-id, webhook-timestamp or webhook-signature header")
	ErrBadTimestamp     = errors.New("webhook-timestamp is not a unix time")
	ErrTimestampTooOld  = errors.New("webhook-timestamp is older than the tolerance")
	ErrTimestampTooNew  = errors.New("webhook-timestamp is newer than the tolerance")
	ErrNoMatchingSig    = errors.New("no signature matches the body")
	ErrInvalidSecret    = errors.New("secret must be whsec_ followed by base64 of 24 to 64 bytes")
	errSecretNotDecoded = errors.New("secret is not base64")
)

// Errors of the endpoint API.
var (
	ErrEndpointNotFound = errors.New("webhook endpoint not found")
	ErrConfigEndpoint   = errors.New("the endpoint is defined in the config file; remove it there")
	ErrInvalidEndpoint  = errors.New("invalid endpoint")
)

// errBlockedAddr is returned by the dialer for a blocked target.
var errBlockedAddr = errors.New("blocked target address (link-local or metadata)")
