package rtmpproto_test

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/sluice-media/sluice/sfu/rtmpproto"
	"github.com/sluice-media/sluice/sfu/rtmpproto/rtmptest"
)

func TestValidateAMF0(t *testing.T) {
	connect := rtmptest.AMF(nil).Str("connect").Num(1)
	connect = append(connect, rtmpproto.AMFObject)
	connect = connect.Key("app").Str("live").Key("tcUrl").Str("rtmp://x/live").End()
	deep := rtmptest.AMF(nil)
	for range rtmpproto.MaxAMFDepth + 1 {
		deep = append(deep, rtmpproto.AMFObject)
		deep = deep.Key("a")
	}
	cases := []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"connect command", connect, true},
		{"null and undefined", []byte{rtmpproto.AMFNull, rtmpproto.AMFUndefined}, true},
		{"strict array within its bytes", []byte{rtmpproto.AMFStrictArray, 0, 0, 0, 2, rtmpproto.AMFNull, rtmpproto.AMFNull}, true},
		{"strict array declaring 2^26 elements (1 GiB of slots)", []byte{rtmpproto.AMFStrictArray, 0x04, 0, 0, 0, rtmpproto.AMFNull}, false},
		{"strict array declaring 2^31-1 elements", []byte{rtmpproto.AMFStrictArray, 0x7f, 0xff, 0xff, 0xff}, false},
		{"string longer than the message", []byte{rtmpproto.AMFString, 0xff, 0xff, 'a'}, false},
		{"long string longer than the message", []byte{rtmpproto.AMFLongString, 0x40, 0, 0, 0, 'a'}, false},
		{"invalid utf-8", []byte{rtmpproto.AMFString, 0, 2, 0xff, 0xfe}, false},
		{"object without end", rtmptest.AMF{rtmpproto.AMFObject}.Key("a").Num(1), false},
		{"nested too deep", deep, false},
		{"amf3 switch", []byte{0x11, 1}, false},
		{"truncated number", []byte{rtmpproto.AMFNumber, 1, 2}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := rtmpproto.ValidateAMF0(c.in)
			if c.ok != (err == nil) {
				t.Fatalf("validateAMF0: %v", err)
			}
			if err != nil && !errors.Is(err, rtmpproto.ErrMalformed) {
				t.Fatalf("error %v is not rtmpproto.ErrMalformed", err)
			}
		})
	}
}

func TestParseMetadata(t *testing.T) {
	b := rtmptest.AMF(nil).Str("onMetaData")
	b = append(b, rtmpproto.AMFECMAArray, 0, 0, 0, 4)
	b = b.Key("width").Num(1280).Key("height").Num(720).Key("framerate").Num(30).Key("encoder").Str("obs-output module")
	b = b.End()
	md, ok := rtmpproto.ParseMetadata(b)
	if !ok || md.Width != 1280 || md.Height != 720 || md.FrameRate != 30 || md.Encoder != "obs-output module" {
		t.Fatalf("%+v %v", md, ok)
	}
	if _, ok := rtmpproto.ParseMetadata(rtmptest.AMF(nil).Str("onCuePoint")); ok {
		t.Fatal("other data read as metadata")
	}
}

// TestAMF0RoundTrip: the encoder and the decoder share one table; what one writes, the other
// reads back as the same values, and the validator accepts.
func TestAMF0RoundTrip(t *testing.T) {
	cases := []struct {
		name   string
		values []any
	}{
		{"connect", []any{"connect", 1.0, map[string]any{"app": "live", "tcUrl": "rtmp://x/live", "fpad": false}}},
		{"_result with null object", []any{"_result", 4.0, nil, 1.0}},
		{"onStatus", []any{"onStatus", 0.0, nil, map[string]any{"level": "error", "code": "NetStream.Publish.BadName", "description": "key in use"}}},
		{"metadata", []any{"@setDataFrame", "onMetaData", rtmpproto.Metadata(1280, 720, 30, 48000, 2)}},
		{"strict array and nesting", []any{[]any{1.0, "a", map[string]any{"b": []any{true, nil}}}}},
		{"long string", []any{strings.Repeat("x", 70000)}},
		{"empty object", []any{map[string]any{}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := rtmpproto.EncodeAMF0(c.values...)
			if err != nil {
				t.Fatal(err)
			}
			if err := rtmpproto.ValidateAMF0(b); err != nil {
				t.Fatalf("validate: %v", err)
			}
			got, err := rtmpproto.DecodeAMF0(b)
			if err != nil || !reflect.DeepEqual(got, c.values) {
				t.Fatalf("decoded %v (%v), want %v", got, err, c.values)
			}
		})
	}
	if _, err := rtmpproto.EncodeAMF0(struct{}{}); err == nil {
		t.Fatal("encoded a struct")
	}
}

// TestMetadataRoundTrip: what the broadcaster writes as onMetaData, the server reads back.
func TestMetadataRoundTrip(t *testing.T) {
	cases := []struct {
		width, height int
		fps           float64
		rate, ch      int
		want          rtmpproto.StreamInfo
	}{
		{1280, 720, 30, 48000, 2, rtmpproto.StreamInfo{Width: 1280, Height: 720, FrameRate: 30, VideoCodecID: 7, AudioCodecID: 10, Encoder: "sluice"}},
		{640, 360, 0, 0, 0, rtmpproto.StreamInfo{Width: 640, Height: 360, VideoCodecID: 7, Encoder: "sluice"}},
		{0, 0, 5000, 44100, 1, rtmpproto.StreamInfo{VideoCodecID: 7, AudioCodecID: 10, Encoder: "sluice"}},
	}
	for _, c := range cases {
		b, err := rtmpproto.EncodeAMF0("onMetaData", rtmpproto.Metadata(c.width, c.height, c.fps, c.rate, c.ch))
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := rtmpproto.ParseMetadata(b); !ok || got != c.want {
			t.Errorf("%+v: got %+v %v", c, got, ok)
		}
	}
}

func TestParseCommand(t *testing.T) {
	b, _ := rtmpproto.EncodeAMF0("_result", 1.0, map[string]any{"fmsVer": "FMS/3,0,1,123"}, map[string]any{"code": "NetConnection.Connect.Success"})
	c, err := rtmpproto.ParseCommand(b)
	if err != nil || c.Name != "_result" || c.Tx != 1 || c.Info()["code"] != "NetConnection.Connect.Success" {
		t.Fatalf("%+v %v", c, err)
	}
	for _, bad := range [][]byte{nil, {rtmpproto.AMFNumber, 0, 0, 0, 0, 0, 0, 0, 0}} {
		if _, err := rtmpproto.ParseCommand(bad); !errors.Is(err, rtmpproto.ErrMalformed) {
			t.Errorf("%x: %v", bad, err)
		}
	}
}

// FuzzAMF0 decodes arbitrary AMF0: no panic; the validator and the decoder agree; no more
// values than bytes; and what decodes re-encodes to something that decodes again to the same.
func FuzzAMF0(f *testing.F) {
	for _, v := range [][]any{
		{"_result", 1.0, map[string]any{"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0}, map[string]any{"level": "status", "code": "NetConnection.Connect.Success", "objectEncoding": 0.0}},
		{"onStatus", 0.0, nil, map[string]any{"level": "error", "code": "NetStream.Publish.BadName", "description": "key in use"}},
		{"_error", 5.0, nil, map[string]any{"level": "error", "code": "NetStream.Publish.Denied"}},
	} {
		b, err := rtmpproto.EncodeAMF0(v...)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(rtmptest.AMF(nil).Str("onMetaData").Num(1)))
	f.Add([]byte{rtmpproto.AMFStrictArray, 0, 0, 0, 1, rtmpproto.AMFECMAArray, 0, 0, 0, 0, 0, 0, rtmpproto.AMFObjectEnd})
	f.Add([]byte{rtmpproto.AMFTypedObject, 0, 1, 'x', 0, 0, rtmpproto.AMFObjectEnd})
	f.Add([]byte{rtmpproto.AMFLongString, 0xff, 0xff, 0xff, 0xff, 'a'})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = rtmpproto.ParseMetadata(b)
		_, _ = rtmpproto.ParseMetadataBody(b)
		verr := rtmpproto.ValidateAMF0(b)
		values, err := rtmpproto.DecodeAMF0(b)
		if (err == nil) != (verr == nil) {
			t.Fatalf("validate: %v, decode: %v", verr, err)
		}
		if err != nil {
			if !errors.Is(err, rtmpproto.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if len(values) > len(b) {
			t.Fatalf("%d values from %d bytes", len(values), len(b))
		}
		if _, err := rtmpproto.ParseCommand(b); err != nil && !errors.Is(err, rtmpproto.ErrMalformed) {
			t.Fatal(err)
		}
		re, err := rtmpproto.EncodeAMF0(values...)
		if err != nil {
			t.Fatal(err)
		}
		again, err := rtmpproto.DecodeAMF0(re)
		if err != nil {
			t.Fatalf("re-encoded values do not decode: %v", err)
		}
		if re2, _ := rtmpproto.EncodeAMF0(again...); !bytes.Equal(re, re2) {
			t.Fatalf("re-encoded values decode to other values")
		}
	})
}
