package rtmpproto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"unicode/utf8"
)

// AMF0 (Adobe AMF0 specification, 2006) carries RTMP commands and data messages. The decoder
// never allocates more than its input holds: every declared size and count is checked against
// the bytes that remain, and nesting is bounded (go-amf0 allocates what a value declares
// before reading it, a strict array of 2^31 elements being a 32 GiB make, and recurses once
// per nesting level).

// AMF0 markers (AMF0 spec §2.1).
const (
	AMFNumber      = 0x00
	AMFBoolean     = 0x01
	AMFString      = 0x02
	AMFObject      = 0x03
	AMFNull        = 0x05
	AMFUndefined   = 0x06
	AMFReference   = 0x07
	AMFECMAArray   = 0x08
	AMFObjectEnd   = 0x09
	AMFStrictArray = 0x0a
	AMFDate        = 0x0b
	AMFLongString  = 0x0c
	AMFUnsupported = 0x0d
	AMFXMLDocument = 0x0f
	AMFTypedObject = 0x10
)

// MaxAMFDepth bounds the nesting of AMF0 objects and arrays (OBS and ffmpeg use 2).
const MaxAMFDepth = 16

// ErrMalformed reports AMF0, an FLV tag or a codec configuration that cannot be parsed.
var ErrMalformed = errors.New("malformed rtmp data")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// ValidateAMF0 reports whether b is a sequence of well-formed AMF0 values whose declared
// sizes and counts fit in b, nested at most MaxAMFDepth deep, with valid UTF-8 strings (go-amf0
// refuses invalid UTF-8 with a hex dump of the string, which could carry a stream key into a
// log). It allocates nothing.
func ValidateAMF0(b []byte) error {
	for len(b) > 0 {
		var err error
		if _, b, err = amfValue(b, 0, false); err != nil {
			return err
		}
	}
	return nil
}

// DecodeAMF0 decodes a sequence of AMF0 values: numbers and dates as float64, booleans as
// bool, strings (and XML documents) as string, null, undefined and references as nil, objects
// and ECMA arrays as map[string]any, strict arrays as []any.
func DecodeAMF0(b []byte) ([]any, error) {
	var out []any
	for len(b) > 0 {
		v, rest, err := amfValue(b, 0, true)
		if err != nil {
			return out, err
		}
		out = append(out, v)
		b = rest
	}
	return out, nil
}

// amfValue reads one value; it builds it only when build is set.
func amfValue(b []byte, depth int, build bool) (any, []byte, error) {
	if len(b) < 1 {
		return nil, nil, malformed("truncated amf0 value")
	}
	m, b := b[0], b[1:]
	switch m {
	case AMFNumber, AMFDate:
		n := 8
		if m == AMFDate {
			n = 10 // and a time zone
		}
		if len(b) < n {
			return nil, nil, malformed("truncated amf0 number")
		}
		if build {
			return math.Float64frombits(binary.BigEndian.Uint64(b)), b[n:], nil
		}
		return nil, b[n:], nil
	case AMFBoolean:
		if len(b) < 1 {
			return nil, nil, malformed("truncated amf0 boolean")
		}
		if build {
			return b[0] != 0, b[1:], nil
		}
		return nil, b[1:], nil
	case AMFString, AMFLongString, AMFXMLDocument:
		s, rest, err := amfString(b, m == AMFString)
		if err != nil || !build {
			return nil, rest, err
		}
		return string(s), rest, nil
	case AMFNull, AMFUndefined, AMFUnsupported:
		return nil, b, nil
	case AMFReference:
		if len(b) < 2 {
			return nil, nil, malformed("truncated amf0 reference")
		}
		return nil, b[2:], nil
	case AMFObject:
		return amfProperties(b, depth+1, build)
	case AMFTypedObject:
		_, b, err := amfString(b, true)
		if err != nil {
			return nil, nil, err
		}
		return amfProperties(b, depth+1, build)
	case AMFECMAArray:
		if len(b) < 4 {
			return nil, nil, malformed("truncated amf0 ecma array")
		}
		return amfProperties(b[4:], depth+1, build) // the count is advisory: the end marker ends it
	case AMFStrictArray:
		if depth+1 > MaxAMFDepth {
			return nil, nil, malformed("amf0 values nested deeper than %d", MaxAMFDepth)
		}
		if len(b) < 4 {
			return nil, nil, malformed("truncated amf0 strict array")
		}
		n := binary.BigEndian.Uint32(b)
		b = b[4:]
		if uint64(n) > uint64(len(b)) { // every element takes at least its marker byte
			return nil, nil, malformed("amf0 strict array of %d elements in %d bytes", n, len(b))
		}
		var arr []any
		if build {
			arr = make([]any, 0, n)
		}
		for range n {
			v, rest, err := amfValue(b, depth+1, build)
			if err != nil {
				return nil, nil, err
			}
			if build {
				arr = append(arr, v)
			}
			b = rest
		}
		if !build {
			return nil, b, nil
		}
		return arr, b, nil
	}
	return nil, nil, malformed("amf0 marker 0x%02x not supported", m)
}

// amfProperties reads name/value pairs up to the object end marker (an empty name, then 0x09).
func amfProperties(b []byte, depth int, build bool) (any, []byte, error) {
	if depth > MaxAMFDepth {
		return nil, nil, malformed("amf0 values nested deeper than %d", MaxAMFDepth)
	}
	var obj map[string]any
	if build {
		obj = map[string]any{}
	}
	for {
		name, rest, err := amfString(b, true)
		if err != nil {
			return nil, nil, err
		}
		if len(name) == 0 {
			if len(rest) < 1 || rest[0] != AMFObjectEnd {
				return nil, nil, malformed("amf0 object without its end marker")
			}
			if !build {
				return nil, rest[1:], nil
			}
			return obj, rest[1:], nil
		}
		var v any
		if v, b, err = amfValue(rest, depth, build); err != nil {
			return nil, nil, err
		}
		if build {
			obj[string(name)] = v
		}
	}
}

// amfString reads the UTF-8 string of a string (16-bit length) or long string (32-bit).
func amfString(b []byte, short bool) ([]byte, []byte, error) {
	size := 4
	if short {
		size = 2
	}
	if len(b) < size {
		return nil, nil, malformed("truncated amf0 string")
	}
	var n uint64
	if short {
		n = uint64(binary.BigEndian.Uint16(b))
	} else {
		n = uint64(binary.BigEndian.Uint32(b))
	}
	if n > uint64(len(b)-size) {
		return nil, nil, malformed("amf0 string of %d bytes in %d remaining", n, len(b)-size)
	}
	s := b[size : size+int(n)]
	if !utf8.Valid(s) {
		return nil, nil, malformed("amf0 string is not valid utf-8")
	}
	return s, b[size+int(n):], nil
}

// EncodeAMF0 encodes values: float64, bool, string, nil (null), map[string]any (an object,
// its properties in key order) and []any (a strict array).
func EncodeAMF0(values ...any) ([]byte, error) {
	var b []byte
	for _, v := range values {
		var err error
		if b, err = AppendAMF0(b, v); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// AppendAMF0 appends one value encoded as EncodeAMF0 encodes it.
func AppendAMF0(dst []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(dst, AMFNull), nil
	case float64:
		return binary.BigEndian.AppendUint64(append(dst, AMFNumber), math.Float64bits(v)), nil
	case bool:
		b := byte(0)
		if v {
			b = 1
		}
		return append(dst, AMFBoolean, b), nil
	case string:
		if len(v) > math.MaxUint16 {
			dst = binary.BigEndian.AppendUint32(append(dst, AMFLongString), uint32(len(v)))
			return append(dst, v...), nil
		}
		return appendKey(append(dst, AMFString), v), nil
	case map[string]any:
		dst = append(dst, AMFObject)
		for _, k := range slices.Sorted(maps.Keys(v)) {
			var err error
			if dst, err = AppendAMF0(appendKey(dst, k), v[k]); err != nil {
				return nil, err
			}
		}
		return append(dst, 0, 0, AMFObjectEnd), nil
	case []any:
		dst = binary.BigEndian.AppendUint32(append(dst, AMFStrictArray), uint32(len(v)))
		for _, e := range v {
			var err error
			if dst, err = AppendAMF0(dst, e); err != nil {
				return nil, err
			}
		}
		return dst, nil
	}
	return nil, fmt.Errorf("amf0: cannot encode %T", v)
}

// appendKey appends a property name (a string without its marker).
func appendKey(dst []byte, k string) []byte {
	return append(binary.BigEndian.AppendUint16(dst, uint16(len(k))), k...)
}

// Command is a decoded command message (RTMP spec 1.0 §7.1.1).
type Command struct {
	Name   string
	Tx     float64        // transaction id
	Object map[string]any // the command object (nil when null)
	Args   []any          // the values after it
}

// ParseCommand decodes the AMF0 body of a command message.
func ParseCommand(payload []byte) (Command, error) {
	values, err := DecodeAMF0(payload)
	if err != nil {
		return Command{}, err
	}
	var c Command
	if len(values) < 1 {
		return c, malformed("empty command")
	}
	var ok bool
	if c.Name, ok = values[0].(string); !ok {
		return c, malformed("command name is not a string")
	}
	if len(values) > 1 {
		c.Tx, _ = values[1].(float64)
	}
	if len(values) > 2 {
		c.Object, _ = values[2].(map[string]any)
	}
	if len(values) > 3 {
		c.Args = values[3:]
	}
	return c, nil
}

// Info returns the information object of _result, _error and onStatus: the first object
// among the arguments, else the command object.
func (c Command) Info() map[string]any {
	for _, a := range c.Args {
		if m, ok := a.(map[string]any); ok {
			return m
		}
	}
	return c.Object
}
