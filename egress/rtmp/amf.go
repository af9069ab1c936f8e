package rtmp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/yutopp/go-rtmp/message"
)

// AMF0 (Adobe AMF0 specification, 2006) carries the server's commands: _result, _error,
// onStatus. Commands are encoded with go-rtmp's AMF0 encoder; they are decoded here, because
// go-amf0 allocates what a value declares before reading it (a long string of 4 GiB is one
// make). This decoder never allocates more than the input holds: every declared size and
// count is checked against the bytes that remain.

// AMF0 markers (AMF0 spec §2.1).
const (
	amfNumber      = 0x00
	amfBoolean     = 0x01
	amfString      = 0x02
	amfObject      = 0x03
	amfNull        = 0x05
	amfUndefined   = 0x06
	amfECMAArray   = 0x08
	amfObjectEnd   = 0x09
	amfStrictArray = 0x0a
	amfDate        = 0x0b
	amfLongString  = 0x0c
)

// maxAMFDepth bounds the nesting of objects and arrays.
const maxAMFDepth = 16

// errAMF reports AMF0 the decoder cannot read.
var errAMF = errors.New("malformed amf0")

// decodeAMF0 decodes a sequence of AMF0 values. Numbers and dates are float64, booleans bool,
// strings string, null and undefined nil, objects and ECMA arrays map[string]any, strict arrays
// []any.
func decodeAMF0(b []byte) ([]any, error) {
	var out []any
	for len(b) > 0 {
		v, rest, err := amfValue(b, 0)
		if err != nil {
			return out, err
		}
		out = append(out, v)
		b = rest
	}
	return out, nil
}

func amfValue(b []byte, depth int) (any, []byte, error) {
	if depth > maxAMFDepth {
		return nil, nil, fmt.Errorf("%w: nested deeper than %d", errAMF, maxAMFDepth)
	}
	if len(b) < 1 {
		return nil, nil, fmt.Errorf("%w: truncated value", errAMF)
	}
	m, b := b[0], b[1:]
	switch m {
	case amfNumber:
		if len(b) < 8 {
			return nil, nil, fmt.Errorf("%w: truncated number", errAMF)
		}
		return math.Float64frombits(binary.BigEndian.Uint64(b)), b[8:], nil
	case amfDate:
		if len(b) < 10 {
			return nil, nil, fmt.Errorf("%w: truncated date", errAMF)
		}
		return math.Float64frombits(binary.BigEndian.Uint64(b)), b[10:], nil
	case amfBoolean:
		if len(b) < 1 {
			return nil, nil, fmt.Errorf("%w: truncated boolean", errAMF)
		}
		return b[0] != 0, b[1:], nil
	case amfString:
		s, rest, err := amfString16(b)
		return s, rest, err
	case amfLongString:
		if len(b) < 4 {
			return nil, nil, fmt.Errorf("%w: truncated long string", errAMF)
		}
		n := binary.BigEndian.Uint32(b)
		if uint64(n) > uint64(len(b)-4) {
			return nil, nil, fmt.Errorf("%w: long string of %d bytes in %d", errAMF, n, len(b)-4)
		}
		return string(b[4 : 4+n]), b[4+n:], nil
	case amfNull, amfUndefined:
		return nil, b, nil
	case amfObject:
		return amfProperties(b, depth)
	case amfECMAArray:
		if len(b) < 4 {
			return nil, nil, fmt.Errorf("%w: truncated ecma array", errAMF)
		}
		// The count is advisory (encoders get it wrong): the end marker ends the array.
		return amfProperties(b[4:], depth)
	case amfStrictArray:
		if len(b) < 4 {
			return nil, nil, fmt.Errorf("%w: truncated strict array", errAMF)
		}
		n := binary.BigEndian.Uint32(b)
		b = b[4:]
		if uint64(n) > uint64(len(b)) { // every value takes at least one byte
			return nil, nil, fmt.Errorf("%w: strict array of %d values in %d bytes", errAMF, n, len(b))
		}
		arr := make([]any, 0, n)
		for range n {
			v, rest, err := amfValue(b, depth+1)
			if err != nil {
				return nil, nil, err
			}
			arr = append(arr, v)
			b = rest
		}
		return arr, b, nil
	}
	return nil, nil, fmt.Errorf("%w: unsupported marker 0x%02x", errAMF, m)
}

func amfString16(b []byte) (string, []byte, error) {
	if len(b) < 2 {
		return "", nil, fmt.Errorf("%w: truncated string", errAMF)
	}
	n := int(binary.BigEndian.Uint16(b))
	if n > len(b)-2 {
		return "", nil, fmt.Errorf("%w: string of %d bytes in %d", errAMF, n, len(b)-2)
	}
	return string(b[2 : 2+n]), b[2+n:], nil
}

// amfProperties reads name/value pairs up to the object end marker (an empty name then 0x09).
func amfProperties(b []byte, depth int) (any, []byte, error) {
	obj := map[string]any{}
	for {
		if len(b) >= 3 && b[0] == 0 && b[1] == 0 && b[2] == amfObjectEnd {
			return obj, b[3:], nil
		}
		key, rest, err := amfString16(b)
		if err != nil {
			return nil, nil, err
		}
		v, rest, err := amfValue(rest, depth+1)
		if err != nil {
			return nil, nil, err
		}
		obj[key] = v
		b = rest
	}
}

// encodeAMF0 encodes values with go-rtmp's AMF0 encoder: strings, float64, bool, nil,
// map[string]any (as objects).
func encodeAMF0(values ...any) ([]byte, error) {
	var buf bytes.Buffer
	enc := message.NewAMFEncoder(&buf, message.EncodingTypeAMF0)
	for _, v := range values {
		if err := enc.Encode(v); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// command is a decoded command message.
type command struct {
	name   string
	tx     float64
	object map[string]any // the command object (nil when null)
	args   []any          // the values after it
}

func parseCommand(payload []byte) (command, error) {
	values, err := decodeAMF0(payload)
	if err != nil {
		return command{}, err
	}
	var c command
	if len(values) < 1 {
		return c, fmt.Errorf("%w: empty command", errAMF)
	}
	var ok bool
	if c.name, ok = values[0].(string); !ok {
		return c, fmt.Errorf("%w: command name is not a string", errAMF)
	}
	if len(values) > 1 {
		c.tx, _ = values[1].(float64)
	}
	if len(values) > 2 {
		c.object, _ = values[2].(map[string]any)
	}
	if len(values) > 3 {
		c.args = values[3:]
	}
	return c, nil
}

// info returns the information object of _result, _error and onStatus: the first object
// among the arguments, else the command object.
func (c command) info() map[string]any {
	for _, a := range c.args {
		if m, ok := a.(map[string]any); ok {
			return m
		}
	}
	return c.object
}

func str(m map[string]any, key string) string {
	s, _ := m[key].(string)
	return s
}
