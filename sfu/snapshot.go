package sfu

// RoomStatus is a room with its participants, for /v1/status and /v1/rooms/{room}.
type RoomStatus struct {
	Room         *RoomInfo           `json:"room"`
	Participants []ParticipantStatus `json:"participants"`
}

// ParticipantStatus is a participant with its tracks and streams.
type ParticipantStatus struct {
	Participant   *ParticipantInfo `json:"participant"`
	Tracks        []TrackStatus    `json:"tracks"`
	Streams       []*StreamInfo    `json:"streams"`
	Subscriptions int              `json:"subscriptions"`
}

// TrackStatus is a track with its live figures.
type TrackStatus struct {
	*TrackInfo
	BitrateKbps    float64 `json:"bitrate_kbps"`
	FPS            float64 `json:"fps,omitempty"`
	Subscribers    int     `json:"subscribers"`
	PacketsIn      uint64  `json:"packets_in"`
	PacketsDropped uint64  `json:"packets_dropped"`
	Interrupted    bool    `json:"interrupted,omitempty"`
	// Transcoded lists the track's transcoded forms being read (see Track.Derive).
	Transcoded []TrackStatus `json:"transcoded,omitempty"`
}

// Status returns the room's current state with live bitrates and frame rates.
func (r *Room) Status() RoomStatus {
	st := RoomStatus{Room: r.Info(), Participants: []ParticipantStatus{}}
	for _, p := range r.Participants() {
		ps := ParticipantStatus{Participant: p.Info(), Tracks: []TrackStatus{}, Streams: []*StreamInfo{},
			Subscriptions: len(p.Subscriptions())}
		for _, t := range p.Tracks() {
			ts := t.status()
			for _, d := range t.Derived() {
				ts.Transcoded = append(ts.Transcoded, d.status())
			}
			ps.Tracks = append(ps.Tracks, ts)
		}
		for _, s := range p.Streams() {
			ps.Streams = append(ps.Streams, s.Info(true))
		}
		st.Participants = append(st.Participants, ps)
	}
	return st
}

// status returns the track's live figures.
func (t *Track) status() TrackStatus {
	subs := t.Subscriptions()
	var dropped uint64
	for _, s := range subs {
		dropped += s.Dropped()
	}
	return TrackStatus{
		TrackInfo:      t.Info(),
		BitrateKbps:    float64(int64(t.rate.Bitrate()/100)) / 10,
		FPS:            float64(int64(t.rate.FPS()*10)) / 10,
		Subscribers:    len(subs),
		PacketsIn:      t.packets.Load(),
		PacketsDropped: dropped,
		Interrupted:    t.interruptedFlag.Load(),
	}
}
