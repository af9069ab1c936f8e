package broadcast

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
)

// binding is the source of a broadcast at one time: one participant's video and audio tracks
// as the platform takes them (H.264, AAC), which are the published tracks or their transcoded
// forms. It is immutable once made; release gives the transcoded tracks back after every
// destination stopped reading them.
type binding struct {
	participant        *sfu.Participant
	srcVideo, srcAudio *sfu.Track // the published tracks
	video, audio       *sfu.Track // what destinations read (nil: none)
	sps, pps           []byte     // H.264 parameter sets from the SDP, if any
	asc                []byte     // AAC AudioSpecificConfig
	sampleRate         int
	channels           int
	sizeLength         int // RFC 3640 AU-header fields of the AAC track
	indexLength        int
	releases           []func()
	// notes are what the binding left out (an audio codec no conversion exists for).
	notes []string
}

// transcoder is the hub's conversion service (sfu.Hub.Transcode).
type transcoder func(src *sfu.Track, to string) (*sfu.Track, func(), error)

// pickTracks returns p's first video and first audio track that are still live.
func pickTracks(p *sfu.Participant) (video, audio *sfu.Track) {
	for _, t := range p.Tracks() {
		if t.Closed() {
			continue
		}
		switch {
		case t.Kind() == sfu.KindVideo && video == nil:
			video = t
		case t.Kind() == sfu.KindAudio && audio == nil:
			audio = t
		}
	}
	return video, audio
}

// bindTracks makes the binding of a participant's tracks, converting through tc what RTMP
// cannot carry. A missing transcoder fails with an error wrapping sfu.ErrNoTranscoder; a
// video codec nothing converts fails with errUnsupportedCodec. Audio that cannot be carried is
// left out with a note.
func bindTracks(p *sfu.Participant, video, audio *sfu.Track, tc transcoder) (_ *binding, err error) {
	b := &binding{participant: p, srcVideo: video, srcAudio: audio}
	defer func() {
		if err != nil {
			b.release()
		}
	}()
	if video != nil {
		switch c := video.Codec(); c.Name {
		case sfu.CodecH264:
			b.video = video
			b.sps, b.pps = spropParams(c.Fmtp)
		case sfu.CodecVP8, sfu.CodecVP9, sfu.CodecH265:
			out, release, err := tc(video, sfu.CodecH264)
			if err != nil {
				return nil, fmt.Errorf("video %s needs converting to H.264: %w", c.Name, err)
			}
			b.releases = append(b.releases, release)
			b.video = out
		default:
			return nil, fmt.Errorf("%w: video %s", errUnsupportedCodec, c.Name)
		}
	}
	if audio != nil {
		a := audio
		switch c := audio.Codec(); c.Name {
		case sfu.CodecAAC:
		case sfu.CodecOpus:
			out, release, err := tc(audio, sfu.CodecAAC)
			if err != nil {
				if errors.Is(err, sfu.ErrNoTranscoder) {
					return nil, fmt.Errorf("audio %s needs converting to AAC: %w", c.Name, err)
				}
				b.notes = append(b.notes, fmt.Sprintf("audio %s left out: %v", c.Name, err))
				a = nil
			} else {
				b.releases = append(b.releases, release)
				a = out
			}
		default:
			b.notes = append(b.notes, "audio "+c.Name+" left out: RTMP takes AAC and no conversion exists")
			a = nil
		}
		if a != nil {
			if err := b.setAAC(a); err != nil {
				b.notes = append(b.notes, "audio left out: "+err.Error())
			} else {
				b.audio = a
			}
		}
	}
	if b.video == nil && b.audio == nil {
		return nil, fmt.Errorf("%w: the source has no track RTMP can carry", errUnsupportedCodec)
	}
	return b, nil
}

// setAAC reads the AAC track's configuration.
func (b *binding) setAAC(t *sfu.Track) error {
	c := t.Codec()
	asc, err := media.AACConfig(c)
	if err != nil {
		return err
	}
	var cfg mpeg4audio.AudioSpecificConfig
	if err := cfg.Unmarshal(asc); err != nil {
		return fmt.Errorf("aac config: %w", err)
	}
	b.asc, b.sampleRate, b.channels = asc, cfg.SampleRate, cfg.ChannelCount
	b.sizeLength = fmtpInt(c.Fmtp, "sizelength", 13)
	b.indexLength = fmtpInt(c.Fmtp, "indexlength", 3)
	if b.sizeLength < 1 || b.sizeLength > 32 || b.indexLength > 8 {
		return errors.New("aac: unsupported AU-header sizes")
	}
	return nil
}

// same reports whether b reads exactly these published tracks.
func (b *binding) same(p *sfu.Participant, video, audio *sfu.Track) bool {
	return b != nil && b.participant == p && b.srcVideo == video && b.srcAudio == audio
}

// live reports whether every track of b is still up.
func (b *binding) live() bool {
	for _, t := range []*sfu.Track{b.srcVideo, b.srcAudio, b.video, b.audio} {
		if t != nil && t.Closed() {
			return false
		}
	}
	return true
}

// release gives back the transcoded tracks. Called once, after every reader unsubscribed.
func (b *binding) release() {
	for _, r := range b.releases {
		r()
	}
	b.releases = nil
}

// identity is the source participant's identity ("" when none).
func (b *binding) identity() string {
	if b == nil || b.participant == nil {
		return ""
	}
	return b.participant.Identity()
}

func fmtpValue(fmtp, key string) string {
	for _, kv := range strings.Split(fmtp, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.EqualFold(strings.TrimSpace(k), key) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func fmtpInt(fmtp, key string, def int) int {
	if n, err := strconv.Atoi(fmtpValue(fmtp, key)); err == nil {
		return n
	}
	return def
}

// spropParams returns the SPS and PPS of an H.264 fmtp's sprop-parameter-sets (RFC 6184
// §8.1), when it has them.
func spropParams(fmtp string) (sps, pps []byte) {
	v := fmtpValue(fmtp, "sprop-parameter-sets")
	if v == "" {
		return nil, nil
	}
	for _, part := range strings.Split(v, ",") {
		b, err := base64Decode(part)
		if err != nil || len(b) == 0 {
			continue
		}
		switch b[0] & 0x1f {
		case naluSPS:
			sps = b
		case naluPPS:
			pps = b
		}
	}
	return sps, pps
}
