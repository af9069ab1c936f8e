package webhooks

import (
	"strings"
)

// Subjects of the event log: sluice.ev.<room token>.<type>, so that one room's events (or one
// type) can be read with a subject filter. Events that concern no room use the token "~".
const (
	subjectPrefix = "sluice.ev."
	noRoomToken   = "~"
)

// eventSubject returns the log subject of an event of type typ in room.
func eventSubject(room, typ string) string {
	return subjectPrefix + roomToken(room) + "." + typ
}

// roomSubject returns the subject filter of every event of room.
func roomSubject(room string) string { return subjectPrefix + roomToken(room) + ".>" }

// roomToken escapes a room name into one subject token: bytes outside [A-Za-z0-9-_@] become
// "~XX" (hex), which no room name contains, so the mapping is one-to-one.
func roomToken(room string) string {
	if room == "" {
		return noRoomToken
	}
	return escapeToken(room, '~', func(c byte) bool { return c == '@' })
}

// kvKey escapes a name into a KV key token (bytes outside [A-Za-z0-9-_] become "=XX").
func kvKey(name string) string { return escapeToken(name, '=', func(byte) bool { return false }) }

func escapeToken(s string, esc byte, extra func(byte) bool) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || extra(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte(esc)
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// parseSubject returns the room and type of an event subject.
func parseSubject(subj string) (room, typ string, ok bool) {
	rest, found := strings.CutPrefix(subj, subjectPrefix)
	if !found {
		return "", "", false
	}
	tok, typ, found := strings.Cut(rest, ".")
	if !found {
		return "", "", false
	}
	if tok == noRoomToken {
		return "", typ, true
	}
	return unescapeToken(tok, '~'), typ, true
}

func unescapeToken(s string, esc byte) string {
	if strings.IndexByte(s, esc) < 0 {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == esc && i+2 < len(s) {
			if v, ok := unhex(s[i+1], s[i+2]); ok {
				b.WriteByte(v)
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func unhex(a, b byte) (byte, bool) {
	x, ok1 := hexVal(a)
	y, ok2 := hexVal(b)
	return x<<4 | y, ok1 && ok2
}

func hexVal(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
