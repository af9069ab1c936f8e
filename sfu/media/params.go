package media

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/sluice-media/sluice/sfu"
)

// ErrCodecParams is wrapped by the errors of codec parameters that are missing or malformed.
var ErrCodecParams = errors.New("invalid codec parameters")

// FmtpValue returns one parameter of SDP format parameters (RFC 4566 a=fmtp, "k=v;k=v"): keys
// are case-insensitive, the value is trimmed, "" when absent.
func FmtpValue(fmtp, key string) string {
	for kv := range strings.SplitSeq(fmtp, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.EqualFold(strings.TrimSpace(k), key) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// FmtpInt returns an integer parameter: def when absent, an error wrapping ErrCodecParams when
// it is not an integer within [lo, hi].
func FmtpInt(fmtp, key string, def, lo, hi int) (int, error) {
	v := FmtpValue(fmtp, key)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%w: %s=%q, want %d to %d", ErrCodecParams, key, v, lo, hi)
	}
	return n, nil
}

// SpropSets returns the base64 parameter sets of a comma-separated fmtp parameter (H.264
// sprop-parameter-sets, RFC 6184 §8.1; H.265 sprop-vps/sps/pps, RFC 7798 §7.1). Entries that
// do not decode, or decode to nothing, are skipped.
func SpropSets(fmtp, key string) [][]byte {
	var out [][]byte
	for part := range strings.SplitSeq(FmtpValue(fmtp, key), ",") {
		if b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(part)); err == nil && len(b) > 0 {
			out = append(out, b)
		}
	}
	return out
}

// H264Sprop returns the SPS and PPS of an H.264 fmtp's sprop-parameter-sets, picked by NAL
// unit type, when it has them.
func H264Sprop(fmtp string) (sps, pps []byte) {
	for _, b := range SpropSets(fmtp, "sprop-parameter-sets") {
		switch b[0] & 0x1f {
		case naluSPS:
			sps = b
		case naluPPS:
			pps = b
		}
	}
	return sps, pps
}

// H265Sprop returns the first VPS, SPS and PPS of an H.265 fmtp, when it has them.
func H265Sprop(fmtp string) (vps, sps, pps []byte) {
	first := func(key string) []byte {
		if s := SpropSets(fmtp, key); len(s) > 0 {
			return s[0]
		}
		return nil
	}
	return first("sprop-vps"), first("sprop-sps"), first("sprop-pps")
}

// CloneNALUs returns a deep copy of NAL units (parameter sets kept beyond a reused buffer).
func CloneNALUs(in [][]byte) [][]byte {
	out := make([][]byte, len(in))
	for i, n := range in {
		out[i] = bytes.Clone(n)
	}
	return out
}

func nalType(n []byte, h265 bool) byte {
	if h265 {
		return (n[0] >> 1) & 0x3f
	}
	return n[0] & 0x1f
}

// AACParams are the parameters of an MPEG4-GENERIC AAC track (RFC 3640 §4.1).
type AACParams struct {
	// Config is the AudioSpecificConfig (ISO 14496-3 §1.6.2.1) and Raw its bytes as the fmtp
	// carries them.
	Config mpeg4audio.AudioSpecificConfig
	Raw    []byte
	// The AU-header field sizes in bits.
	SizeLength, IndexLength, IndexDeltaLength int
}

// SamplesPerUnit is the number of samples of one access unit (ISO 14496-3 frameLengthFlag).
func (a *AACParams) SamplesPerUnit() int {
	if a.Config.FrameLengthFlag {
		return 960
	}
	return 1024
}

// ParseAAC reads the parameters of an AAC codec: the config, the AU-header sizes (defaults of
// AAC-hbr: 13, 3, 3; each at most 32 bits, the size at least 1) and the mode, which must be
// AAC-hbr or AAC-lbr when given. Errors wrap ErrCodecParams.
func ParseAAC(c sfu.Codec) (*AACParams, error) {
	if mode := FmtpValue(c.Fmtp, "mode"); mode != "" && !strings.EqualFold(mode, "AAC-hbr") && !strings.EqualFold(mode, "AAC-lbr") {
		return nil, fmt.Errorf("%w: MPEG4-GENERIC mode %s", ErrCodecParams, mode)
	}
	raw, err := hex.DecodeString(FmtpValue(c.Fmtp, "config"))
	if err != nil || len(raw) == 0 {
		return nil, fmt.Errorf("%w: aac: no config in fmtp", ErrCodecParams)
	}
	a := &AACParams{Raw: raw}
	if err := a.Config.Unmarshal(raw); err != nil {
		return nil, fmt.Errorf("%w: aac config: %w", ErrCodecParams, err)
	}
	if a.SizeLength, err = FmtpInt(c.Fmtp, "sizelength", 13, 1, 32); err != nil {
		return nil, err
	}
	if a.IndexLength, err = FmtpInt(c.Fmtp, "indexlength", 3, 0, 32); err != nil {
		return nil, err
	}
	if a.IndexDeltaLength, err = FmtpInt(c.Fmtp, "indexdeltalength", 3, 0, 32); err != nil {
		return nil, err
	}
	return a, nil
}
