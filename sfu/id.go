package sfu

import (
	"crypto/rand"
)

const idAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// NewID returns prefix followed by 16 random base62 characters (95 bits), e.g. "RM_4f9Kc…".
// Safe for concurrent use.
func NewID(prefix string) string {
	var raw [16]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails on supported platforms
	b := make([]byte, len(prefix)+len(raw))
	copy(b, prefix)
	for i, r := range raw {
		b[len(prefix)+i] = idAlphabet[int(r)%len(idAlphabet)]
	}
	return string(b)
}

// ID prefixes of the objects the core creates.
const (
	PrefixRoom        = "RM_"
	PrefixParticipant = "PA_"
	PrefixTrack       = "TR_"
	PrefixStream      = "ST_"
)
