package rtmp

import (
	"encoding/binary"
	"math"
	"unicode/utf8"
)

// AMF0 (Adobe AMF0 specification, 2006) carries RTMP commands and data messages. go-amf0
// allocates what a value declares before reading it (a strict array of 2^31 elements is a
// 32 GiB make) and recurses once per nesting level, so every AMF0 message is checked here,
// with its whole body in hand, before go-rtmp decodes it.

// AMF0 markers (AMF0 spec §2.1).
const (
	amfNumber      = 0x00
	amfBoolean     = 0x01
	amfString      = 0x02
	amfObject      = 0x03
	amfMovieClip   = 0x04
	amfNull        = 0x05
	amfUndefined   = 0x06
	amfReference   = 0x07
	amfECMAArray   = 0x08
	amfObjectEnd   = 0x09
	amfStrictArray = 0x0a
	amfDate        = 0x0b
	amfLongString  = 0x0c
	amfUnsupported = 0x0d
	amfRecordSet   = 0x0e
	amfXMLDocument = 0x0f
	amfTypedObject = 0x10
)

// maxAMFDepth bounds the nesting of AMF0 objects and arrays (OBS and ffmpeg use 2).
const maxAMFDepth = 16

// amfWalker reads AMF0 values without allocating; visit, when set, sees every property of
// depth 1 (the members of a top-level object or ECMA array).
type amfWalker struct {
	visit func(key string, marker byte, num float64, str []byte)
}

// validateAMF0 reports whether b is a sequence of well-formed AMF0 values whose declared
// sizes and counts fit in b, nested at most maxAMFDepth deep.
func validateAMF0(b []byte) error {
	var w amfWalker
	for len(b) > 0 {
		var err error
		if b, err = w.value(b, 0, ""); err != nil {
			return err
		}
	}
	return nil
}

func (w *amfWalker) value(b []byte, depth int, key string) ([]byte, error) {
	if len(b) < 1 {
		return nil, malformed("truncated amf0 value")
	}
	m, b := b[0], b[1:]
	switch m {
	case amfNumber, amfDate:
		n := 8
		if m == amfDate {
			n = 10
		}
		if len(b) < n {
			return nil, malformed("truncated amf0 number")
		}
		if m == amfNumber && depth == 1 && w.visit != nil {
			w.visit(key, m, math.Float64frombits(binary.BigEndian.Uint64(b)), nil)
		}
		return b[n:], nil
	case amfBoolean:
		if len(b) < 1 {
			return nil, malformed("truncated amf0 boolean")
		}
		if depth == 1 && w.visit != nil {
			w.visit(key, m, float64(b[0]), nil)
		}
		return b[1:], nil
	case amfString, amfLongString, amfXMLDocument:
		var s []byte
		var err error
		if m == amfString {
			s, b, err = amfString16(b)
		} else {
			s, b, err = amfString32(b)
		}
		if err == nil && depth == 1 && w.visit != nil {
			w.visit(key, m, 0, s)
		}
		return b, err
	case amfNull, amfUndefined, amfUnsupported:
		return b, nil
	case amfReference:
		if len(b) < 2 {
			return nil, malformed("truncated amf0 reference")
		}
		return b[2:], nil
	case amfObject:
		return w.properties(b, depth+1)
	case amfTypedObject:
		_, b, err := amfString16(b)
		if err != nil {
			return nil, err
		}
		return w.properties(b, depth+1)
	case amfECMAArray:
		if len(b) < 4 {
			return nil, malformed("truncated amf0 ecma array")
		}
		return w.properties(b[4:], depth+1) // the count is advisory: the end marker ends it
	case amfStrictArray:
		if depth+1 > maxAMFDepth {
			return nil, malformed("amf0 values nested deeper than %d", maxAMFDepth)
		}
		if len(b) < 4 {
			return nil, malformed("truncated amf0 strict array")
		}
		n := binary.BigEndian.Uint32(b)
		b = b[4:]
		if uint64(n) > uint64(len(b)) { // every element takes at least its marker byte
			return nil, malformed("amf0 strict array of %d elements in %d bytes", n, len(b))
		}
		for range n {
			var err error
			if b, err = w.value(b, depth+1, ""); err != nil {
				return nil, err
			}
		}
		return b, nil
	}
	return nil, malformed("amf0 marker 0x%02x not supported", m)
}

// properties reads name/value pairs up to the object end marker (an empty name, then 0x09).
func (w *amfWalker) properties(b []byte, depth int) ([]byte, error) {
	if depth > maxAMFDepth {
		return nil, malformed("amf0 values nested deeper than %d", maxAMFDepth)
	}
	for {
		name, rest, err := amfString16(b)
		if err != nil {
			return nil, err
		}
		if len(name) == 0 {
			if len(rest) < 1 || rest[0] != amfObjectEnd {
				return nil, malformed("amf0 object without its end marker")
			}
			return rest[1:], nil
		}
		if b, err = w.value(rest, depth, string(name)); err != nil {
			return nil, err
		}
	}
}

func amfString16(b []byte) ([]byte, []byte, error) {
	if len(b) < 2 {
		return nil, nil, malformed("truncated amf0 string")
	}
	n := int(binary.BigEndian.Uint16(b))
	if n > len(b)-2 {
		return nil, nil, malformed("amf0 string of %d bytes in %d remaining", n, len(b)-2)
	}
	// go-amf0 refuses invalid UTF-8 with a hex dump of the string in its error, which could
	// carry a stream key into a log: refuse it here, without the content.
	if !utf8.Valid(b[2 : 2+n]) {
		return nil, nil, malformed("amf0 string is not valid utf-8")
	}
	return b[2 : 2+n], b[2+n:], nil
}

func amfString32(b []byte) ([]byte, []byte, error) {
	if len(b) < 4 {
		return nil, nil, malformed("truncated amf0 long string")
	}
	n := uint64(binary.BigEndian.Uint32(b))
	if n > uint64(len(b)-4) {
		return nil, nil, malformed("amf0 long string of %d bytes in %d remaining", n, len(b)-4)
	}
	return b[4 : 4+n], b[4+n:], nil
}

// metadata is what onMetaData says about the stream (FLV spec §E.5), used for the status
// until the codec configuration gives the real figures.
type metadata struct {
	width, height int
	frameRate     float64
	videoCodecID  float64
	audioCodecID  float64
	encoder       string
}

// parseMetadata reads the onMetaData script data of a @setDataFrame (the name "onMetaData"
// followed by an object or ECMA array). ok is false for other data.
func parseMetadata(b []byte) (md metadata, ok bool) {
	name, rest, err := amfStringValue(b)
	if err != nil || name != "onMetaData" {
		return md, false
	}
	return parseMetadataBody(rest)
}

// parseMetadataBody reads the object or ECMA array that follows the name "onMetaData".
func parseMetadataBody(b []byte) (md metadata, ok bool) {
	w := amfWalker{visit: func(key string, marker byte, num float64, str []byte) {
		switch {
		case key == "encoder" && marker == amfString:
			md.encoder = string(str[:min(len(str), 64)])
		case marker != amfNumber:
		case key == "width":
			md.width = clampDimension(num)
		case key == "height":
			md.height = clampDimension(num)
		case key == "framerate":
			if num > 0 && num < 1000 {
				md.frameRate = num
			}
		case key == "videocodecid":
			md.videoCodecID = num
		case key == "audiocodecid":
			md.audioCodecID = num
		}
	}}
	if len(b) < 1 || (b[0] != amfObject && b[0] != amfECMAArray) {
		return metadata{}, false
	}
	if _, err := w.value(b, 0, ""); err != nil {
		return metadata{}, false
	}
	return md, true
}

// amfStringValue reads one AMF0 string value.
func amfStringValue(b []byte) (string, []byte, error) {
	if len(b) < 1 || b[0] != amfString {
		return "", nil, malformed("not an amf0 string")
	}
	s, rest, err := amfString16(b[1:])
	return string(s), rest, err
}

func clampDimension(v float64) int {
	if v >= 1 && v <= 16384 {
		return int(v)
	}
	return 0
}
