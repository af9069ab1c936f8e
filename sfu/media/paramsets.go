package media

import (
	"encoding/base64"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"

	"github.com/sluice-media/sluice/sfu"
)

// NAL unit types of the H.264 (ITU-T H.264 table 7-1) and H.265 (ITU-T H.265 table 7-1)
// parameter sets.
const (
	H264SPS = 7
	H264PPS = 8
	H265VPS = 32
	H265SPS = 33
	H265PPS = 34
)

// ParamSet returns the first NAL unit of type typ among nalus of codec (H.264 or H.265), or nil.
func ParamSet(codec string, nalus [][]byte, typ byte) []byte {
	h265 := codec == sfu.CodecH265
	for _, n := range nalus {
		if len(n) > 0 && nalType(n, h265) == typ {
			return n
		}
	}
	return nil
}

// ParamSets returns the parameter sets among the NAL units of an access unit when it has them
// all (H.264: SPS and PPS; H.265: VPS, SPS and PPS), else nil.
func ParamSets(codec string, au [][]byte) [][]byte {
	h265 := codec == sfu.CodecH265
	var out [][]byte
	var seen uint8 // bit per parameter set type
	for _, n := range au {
		if len(n) == 0 {
			continue
		}
		switch t := nalType(n, h265); {
		case !h265 && (t == H264SPS || t == H264PPS):
			out, seen = append(out, n), seen|1<<(t-H264SPS)
		case h265 && t >= H265VPS && t <= H265PPS:
			out, seen = append(out, n), seen|1<<(t-H265VPS)
		}
	}
	if (!h265 && seen == 0b11) || (h265 && seen == 0b111) {
		return out
	}
	return nil
}

// SPSSize returns the resolution an H.264 or H.265 SPS states, or 0, 0 when it does not parse.
func SPSSize(codec string, sps []byte) (width, height int) {
	if len(sps) == 0 {
		return 0, 0
	}
	if codec == sfu.CodecH265 {
		var s h265.SPS
		if s.Unmarshal(sps) != nil {
			return 0, 0
		}
		return s.Width(), s.Height()
	}
	var s h264.SPS
	if s.Unmarshal(sps) != nil {
		return 0, 0
	}
	return s.Width(), s.Height()
}

// ParamsSize returns the resolution stated by the SPS among H.264 or H.265 parameter sets.
func ParamsSize(codec string, params [][]byte) (width, height int) {
	typ := byte(H264SPS)
	if codec == sfu.CodecH265 {
		typ = H265SPS
	}
	return SPSSize(codec, ParamSet(codec, params, typ))
}

// H265Codec describes an H.265 track with its parameter sets (RFC 7798 §7.1).
func H265Codec(vps, sps, pps []byte, payloadType uint8) sfu.Codec {
	fmtp := ""
	for _, p := range []struct {
		key string
		val []byte
	}{{"sprop-vps", vps}, {"sprop-sps", sps}, {"sprop-pps", pps}} {
		if len(p.val) == 0 {
			continue
		}
		if fmtp != "" {
			fmtp += ";"
		}
		fmtp += p.key + "=" + base64.StdEncoding.EncodeToString(p.val)
	}
	return sfu.Codec{Name: sfu.CodecH265, ClockRate: 90000, Fmtp: fmtp, PayloadType: payloadType}
}
