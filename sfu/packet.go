package sfu

import "github.com/pion/rtp"

// Packet is one RTP packet of a track, with the original timestamps. A packet written to a track
// is immutable and shared by every subscriber: a consumer that rewrites headers (SSRC, sequence
// numbers, timestamps) copies Header and shares Payload.
//
// H.264 and H.265 tracks carry their parameter sets in-band before every keyframe, so a
// subscriber starting at a keyframe needs nothing else.
type Packet struct {
	Header  rtp.Header
	Payload []byte
	// Keyframe marks a packet that starts a video keyframe (or the parameter sets before one):
	// a subscriber may start decoding here.
	Keyframe bool
	// HasDTS marks a packet whose producer knew its frame's decode time (an RTMP ingest):
	// DTSOffset is then the frame's presentation minus decode time in RTP ticks (its
	// composition offset, > 0 for frames behind B-frames). Readers of other packets derive
	// decode times themselves (sfu/media). Both fit in the padding after Keyframe.
	HasDTS bool
	// Layer is the simulcast layer of a packet of a simulcast track (0: the lowest; see
	// TrackSpec.Layers). A reader that rewrites numbering re-anchors when it changes.
	Layer     uint8
	DTSOffset int32
	// Arrival is when the track received the packet (unix nanoseconds), set by
	// Track.WritePacket so that subscribers need no clock read of their own.
	Arrival int64
}

// entry is one queued delivery: the shared packet and whether packets were skipped before it.
type entry struct {
	p   *Packet
	gap bool
}
