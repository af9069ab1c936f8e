package rtmpproto

// Metadata returns the onMetaData properties (FLV spec §E.5) of an H.264 + AAC stream; zero
// values are left out.
func Metadata(width, height int, fps float64, sampleRate, channels int) map[string]any {
	md := map[string]any{"videocodecid": float64(FLVVideoAVC), "encoder": "sluice"}
	if width > 0 && height > 0 {
		md["width"], md["height"] = float64(width), float64(height)
	}
	if fps > 0 {
		md["framerate"] = fps
	}
	if sampleRate > 0 {
		md["audiocodecid"] = float64(FLVAudioAAC)
		md["audiosamplerate"] = float64(sampleRate)
		md["audiochannels"] = float64(channels)
		md["stereo"] = channels == 2
	}
	return md
}

// StreamInfo is what onMetaData says about a stream, within sane bounds: a value out of them
// is left zero.
type StreamInfo struct {
	Width, Height int
	FrameRate     float64
	VideoCodecID  float64
	AudioCodecID  float64
	Encoder       string // at most 64 bytes
}

// ParseMetadata reads the script data of a @setDataFrame: the name "onMetaData" followed by an
// object or ECMA array. ok is false for other data.
func ParseMetadata(b []byte) (info StreamInfo, ok bool) {
	if len(b) < 1 || b[0] != AMFString {
		return info, false
	}
	name, rest, err := amfString(b[1:], true)
	if err != nil || string(name) != "onMetaData" {
		return info, false
	}
	return ParseMetadataBody(rest)
}

// ParseMetadataBody reads the object or ECMA array that follows the name "onMetaData".
func ParseMetadataBody(b []byte) (info StreamInfo, ok bool) {
	if len(b) < 1 || (b[0] != AMFObject && b[0] != AMFECMAArray) {
		return info, false
	}
	v, _, err := amfValue(b, 0, true)
	if err != nil {
		return info, false
	}
	props, _ := v.(map[string]any)
	num := func(key string) float64 { f, _ := props[key].(float64); return f }
	if s, ok := props["encoder"].(string); ok {
		info.Encoder = s[:min(len(s), 64)]
	}
	info.Width, info.Height = dimension(num("width")), dimension(num("height"))
	if f := num("framerate"); f > 0 && f < 1000 {
		info.FrameRate = f
	}
	info.VideoCodecID, info.AudioCodecID = num("videocodecid"), num("audiocodecid")
	return info, true
}

func dimension(v float64) int {
	if v >= 1 && v <= 16384 {
		return int(v)
	}
	return 0
}
