package broadcast

import (
	"errors"
	"fmt"

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
	asc                []byte     // AAC AudioSpecificConfig
	sampleRate         int
	channels           int
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
	a, err := media.ParseAAC(t.Codec())
	if err != nil {
		return err
	}
	b.asc, b.sampleRate, b.channels = a.Raw, a.Config.SampleRate, a.Config.ChannelCount
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
