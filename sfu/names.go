package sfu

import "fmt"

// MaxNameLen bounds room names and identities.
const MaxNameLen = 128

// ValidateName checks a room name or identity: 1 to 128 characters of A-Z a-z 0-9 and "-_.@",
// not starting with "." (names appear in URLs, stream keys and file names).
func ValidateName(s string) error {
	if s == "" || len(s) > MaxNameLen {
		return fmt.Errorf("%w: must be 1 to %d characters", ErrInvalidName, MaxNameLen)
	}
	if s[0] == '.' {
		return fmt.Errorf("%w: must not start with '.'", ErrInvalidName)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.', c == '@':
		default:
			return fmt.Errorf("%w: character %q not allowed (use A-Z a-z 0-9 - _ . @)", ErrInvalidName, c)
		}
	}
	return nil
}
