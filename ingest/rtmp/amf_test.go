package rtmp

import (
	"encoding/binary"
	"errors"
	"math"
	"testing"
)

// amf builds AMF0 bytes for tests.
type amf []byte

func (a amf) str(s string) amf {
	a = append(a, amfString)
	a = binary.BigEndian.AppendUint16(a, uint16(len(s)))
	return append(a, s...)
}

func (a amf) num(v float64) amf {
	a = append(a, amfNumber)
	return binary.BigEndian.AppendUint64(a, math.Float64bits(v))
}

func (a amf) key(k string) amf {
	a = binary.BigEndian.AppendUint16(a, uint16(len(k)))
	return append(a, k...)
}

func (a amf) end() amf { return append(a, 0, 0, amfObjectEnd) }

func TestValidateAMF0(t *testing.T) {
	connect := amf(nil).str("connect").num(1)
	connect = append(connect, amfObject)
	connect = connect.key("app").str("live").key("tcUrl").str("rtmp://x/live").end()
	deep := amf(nil)
	for range maxAMFDepth + 1 {
		deep = append(deep, amfObject)
		deep = deep.key("a")
	}
	cases := []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"connect command", connect, true},
		{"null and undefined", []byte{amfNull, amfUndefined}, true},
		{"strict array within its bytes", []byte{amfStrictArray, 0, 0, 0, 2, amfNull, amfNull}, true},
		{"strict array declaring 2^26 elements (1 GiB of slots)", []byte{amfStrictArray, 0x04, 0, 0, 0, amfNull}, false},
		{"strict array declaring 2^31-1 elements", []byte{amfStrictArray, 0x7f, 0xff, 0xff, 0xff}, false},
		{"string longer than the message", []byte{amfString, 0xff, 0xff, 'a'}, false},
		{"long string longer than the message", []byte{amfLongString, 0x40, 0, 0, 0, 'a'}, false},
		{"invalid utf-8", []byte{amfString, 0, 2, 0xff, 0xfe}, false},
		{"object without end", amf{amfObject}.key("a").num(1), false},
		{"nested too deep", deep, false},
		{"amf3 switch", []byte{0x11, 1}, false},
		{"truncated number", []byte{amfNumber, 1, 2}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := validateAMF0(c.in)
			if c.ok != (err == nil) {
				t.Fatalf("validateAMF0: %v", err)
			}
			if err != nil && !errors.Is(err, errMalformed) {
				t.Fatalf("error %v is not errMalformed", err)
			}
		})
	}
}

func TestParseMetadata(t *testing.T) {
	b := amf(nil).str("onMetaData")
	b = append(b, amfECMAArray, 0, 0, 0, 4)
	b = b.key("width").num(1280).key("height").num(720).key("framerate").num(30).key("encoder").str("obs-output module")
	b = b.end()
	md, ok := parseMetadata(b)
	if !ok || md.width != 1280 || md.height != 720 || md.frameRate != 30 || md.encoder != "obs-output module" {
		t.Fatalf("%+v %v", md, ok)
	}
	if _, ok := parseMetadata(amf(nil).str("onCuePoint")); ok {
		t.Fatal("other data read as metadata")
	}
}

func FuzzAMF0(f *testing.F) {
	f.Add([]byte(amf(nil).str("onMetaData").num(1)))
	f.Add([]byte{amfStrictArray, 0, 0, 0, 1, amfECMAArray, 0, 0, 0, 0, 0, 0, amfObjectEnd})
	f.Add([]byte{amfTypedObject, 0, 1, 'x', 0, 0, amfObjectEnd})
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = validateAMF0(b)
		_, _ = parseMetadata(b)
		_, _ = parseMetadataBody(b)
	})
}
