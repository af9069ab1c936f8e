package broadcast

import (
	"errors"
	"fmt"
	"slices"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
)

// binding is the source of a broadcast at one time: one participant's video and audio tracks
// as the platform takes them (H.264, AAC), which are the published tracks or their transcoded
// forms (the broadcast's sfu.Follower owns the conversions). It is immutable once made.
type binding struct {
	participant  *sfu.Participant
	video, audio *sfu.Track // what destinations read (nil: none)
	asc          []byte     // AAC AudioSpecificConfig
	sampleRate   int
	channels     int
	// notes are what the binding left out (an audio codec no conversion exists for).
	notes []string
}

// broadcastLegs are what a broadcast reads: H.264 video (VP8, VP9 and H.265 converted to it)
// and AAC audio (Opus converted to it).
var broadcastLegs = []sfu.Leg{
	convertingLeg(sfu.KindVideo, sfu.CodecH264, sfu.CodecVP8, sfu.CodecVP9, sfu.CodecH265),
	convertingLeg(sfu.KindAudio, sfu.CodecAAC, sfu.CodecOpus),
}

// convertingLeg reads tracks in codec as they are and those in the from codecs converted to it.
func convertingLeg(kind sfu.Kind, codec string, from ...string) sfu.Leg {
	return sfu.Leg{Kind: kind, Takes: func(c sfu.Codec) bool { return c.Name == codec }, Convert: func(c sfu.Codec) string {
		if slices.Contains(from, c.Name) {
			return codec
		}
		return ""
	}}
}

// newBinding makes the binding of the tracks a broadcast's follower reads from p, given the
// problems of its legs. Video that cannot be read fails the binding (errUnsupportedCodec, and
// sfu.ErrNoTranscoder when that is why), as does audio for want of a transcoder; other audio
// that cannot be carried is left out with a note.
func newBinding(p *sfu.Participant, video, audio *sfu.Track, problems []sfu.LegError) (*binding, error) {
	b := &binding{participant: p, video: video}
	for _, e := range problems {
		if e.Kind == sfu.KindVideo || errors.Is(e.Err, sfu.ErrNoTranscoder) {
			return nil, fmt.Errorf("%w: %w", errUnsupportedCodec, &e)
		}
		b.notes = append(b.notes, "audio left out: "+e.Error())
	}
	if audio != nil {
		if err := b.setAAC(audio); err != nil {
			b.notes = append(b.notes, "audio left out: "+err.Error())
		} else {
			b.audio = audio
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
