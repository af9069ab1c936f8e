package sfu

import (
	"encoding/json"
	"time"
)

// Event types of the catalogue (shared/EVENTS.md). Nothing else emits events.
const (
	EventRoomStarted  = "room.started"
	EventRoomUpdated  = "room.updated"
	EventRoomFinished = "room.finished"

	EventParticipantJoined  = "participant.joined"
	EventParticipantUpdated = "participant.updated"
	EventParticipantLeft    = "participant.left"
	EventParticipantQuality = "participant.quality"

	EventTrackPublished          = "track.published"
	EventTrackUpdated            = "track.updated"
	EventTrackMuted              = "track.muted"
	EventTrackUnmuted            = "track.unmuted"
	EventTrackInterrupted        = "track.interrupted"
	EventTrackRecovered          = "track.recovered"
	EventTrackUnpublished        = "track.unpublished"
	EventTrackSubscribed         = "track.subscribed"
	EventTrackUnsubscribed       = "track.unsubscribed"
	EventTrackSubscriptionFailed = "track.subscription_failed"

	EventStreamPublishing  = "stream.publishing"
	EventStreamUnpublished = "stream.unpublished"
	EventStreamPlaying     = "stream.playing"
	EventStreamStopped     = "stream.stopped"
	EventStreamFailed      = "stream.failed"
	EventStreamUpdated     = "stream.updated"
	EventStreamStats       = "stream.stats"

	EventSpeakersChanged = "speakers.changed"

	EventIngestCreated      = "ingest.created"
	EventIngestDeleted      = "ingest.deleted"
	EventIngestStateChanged = "ingest.state_changed"

	EventRecordingStarted = "recording.started"
	EventRecordingUpdated = "recording.updated"
	EventRecordingEnded   = "recording.ended"
	EventRecordingFailed  = "recording.failed"

	EventBroadcastStarted      = "broadcast.started"
	EventBroadcastReconnecting = "broadcast.reconnecting"
	EventBroadcastEnded        = "broadcast.ended"
	EventBroadcastFailed       = "broadcast.failed"
	EventBroadcastUpdated      = "broadcast.updated"

	EventAuthFailed = "auth.failed"

	// Types of shared/EVENTS.md's Additions built by other issues.
	EventRecordingDeleted = "recording.deleted"
	EventNodeJoined       = "node.joined"
	EventNodeLeft         = "node.left"

	EventServerStarted  = "server.started"
	EventServerStopping = "server.stopping"
)

// Reasons carried by terminal events (participant.left, stream.unpublished, room.finished…).
const (
	ReasonClientDisconnected = "client_disconnected"
	ReasonServerShutdown     = "server_shutdown"
	// ReasonNodeShutdown and ReasonNodeLost are the reasons of node.left: the node stopped
	// cleanly, or its heartbeat expired.
	ReasonNodeShutdown      = "shutdown"
	ReasonNodeLost          = "lost"
	ReasonRemoved           = "removed"
	ReasonBanned            = "banned"
	ReasonDuplicateIdentity = "duplicate_identity"
	ReasonTokenExpired      = "token_expired"
	ReasonReconnectTimeout  = "reconnect_timeout"
	ReasonNoMediaTimeout    = "no_media_timeout"
	ReasonRoomDeleted       = "room_deleted"
	ReasonError             = "error"
	ReasonEmptyTimeout      = "empty_timeout"
	// ReasonDeleted is room.finished's reason for a room deleted by the API (its participants
	// leave with room_deleted).
	ReasonDeleted       = "deleted"
	ReasonSourceChanged = "source_changed"
	ReasonSourceEnded   = "source_ended"
	ReasonStopped       = "stopped"
	ReasonOverloaded    = "overloaded"
	ReasonUnpublished   = "unpublished"
)

// Reasons of auth.failed.
const (
	AuthMissingToken     = "missing_token"
	AuthInvalidToken     = "invalid_token"
	AuthExpiredToken     = "expired_token"
	AuthUnknownStreamKey = "unknown_stream_key"
	AuthRoomNotFound     = "room_not_found"
	AuthPermissionDenied = "permission_denied"
)

// Event is the envelope of shared/EVENTS.md: the one value that is appended to the event log,
// delivered to webhooks and streamed to followers. Objects are value snapshots taken when the
// change happened; an Event is immutable once emitted.
//
// The wire names are the contract: fields may be added, never renamed.
type Event struct {
	ID   string    `json:"id"`
	Type string    `json:"type"`
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`

	Room        *RoomInfo        `json:"room,omitempty"`
	Participant *ParticipantInfo `json:"participant,omitempty"`
	Track       *TrackInfo       `json:"track,omitempty"`
	Stream      *StreamInfo      `json:"stream,omitempty"`
	Recording   *RecordingInfo   `json:"recording,omitempty"`
	Broadcast   *BroadcastInfo   `json:"broadcast,omitempty"`
	Ingest      *IngestInfo      `json:"ingest,omitempty"`

	Reason string     `json:"reason,omitempty"`
	Error  *ErrorInfo `json:"error,omitempty"`

	// PrevState is the ingest state before an ingest.state_changed.
	PrevState string `json:"prev_state,omitempty"`
	// Uplink and Downlink are the quality levels of participant.quality (0 unknown … 6 down).
	Uplink   *int `json:"uplink,omitempty"`
	Downlink *int `json:"downlink,omitempty"`
	// Speakers is the loudest-first set of speakers.changed.
	Speakers []Speaker `json:"speakers,omitempty"`
	// RemoteAddr and Protocol say where an auth.failed attempt came from.
	RemoteAddr string `json:"remote_addr,omitempty"`
	Protocol   string `json:"protocol,omitempty"`
	// Version and Node identify the daemon on server.* events (Node as a bare id) and the
	// node that joined or left on node.* events (Node as the node object).
	Version string  `json:"version,omitempty"`
	Node    NodeRef `json:"node,omitzero"`
}

// NodeRef is the `node` of an event. server.* events carry the bare node id, a JSON string
// (the wire form they always had); node.joined and node.left carry the node object of
// shared/EVENTS.md (`id`, `address`, `version`), written as an object whenever Address or
// Version is set. Decoding accepts both forms.
type NodeRef struct {
	ID      string `json:"id"`
	Address string `json:"address,omitempty"`
	Version string `json:"version,omitempty"`
}

// IsZero reports whether no node is set (the field is then left out).
func (n NodeRef) IsZero() bool { return n == NodeRef{} }

// MarshalJSON writes the bare id, or the object when Address or Version is set.
func (n NodeRef) MarshalJSON() ([]byte, error) {
	if n.Address == "" && n.Version == "" {
		return json.Marshal(n.ID)
	}
	type object NodeRef
	return json.Marshal(object(n))
}

// UnmarshalJSON reads either form.
func (n *NodeRef) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		*n = NodeRef{}
		return json.Unmarshal(b, &n.ID)
	}
	type object NodeRef
	return json.Unmarshal(b, (*object)(n))
}

// RoomName returns the name of the room the event concerns, or "".
func (e *Event) RoomName() string {
	switch {
	case e.Room != nil:
		return e.Room.Name
	case e.Recording != nil:
		return e.Recording.Room
	case e.Broadcast != nil:
		return e.Broadcast.Room
	case e.Ingest != nil:
		return e.Ingest.Room
	}
	return ""
}

// ErrorInfo is the error object of *.failed events and API error bodies.
type ErrorInfo struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// RoomInfo is the room object.
type RoomInfo struct {
	Name         string    `json:"name"`
	SID          string    `json:"sid"`
	CreatedAt    time.Time `json:"created_at"`
	Participants int       `json:"participants"`
	Metadata     string    `json:"metadata,omitempty"`
}

// ParticipantInfo is the participant object.
type ParticipantInfo struct {
	SID        string    `json:"sid"`
	Identity   string    `json:"identity"`
	Name       string    `json:"name,omitempty"`
	Kind       string    `json:"kind"`
	JoinedAt   time.Time `json:"joined_at"`
	Metadata   string    `json:"metadata,omitempty"`
	RemoteAddr string    `json:"remote_addr,omitempty"`
}

// TrackInfo is the track object.
type TrackInfo struct {
	SID            string `json:"sid"`
	ParticipantSID string `json:"participant_sid"`
	Kind           string `json:"kind"`
	Codec          string `json:"codec"`
	Source         string `json:"source"`
	Width          int    `json:"width,omitempty"`
	Height         int    `json:"height,omitempty"`
	Muted          bool   `json:"muted"`
	// TranscodedFrom is the sid of the published track a transcoded track is made from.
	TranscodedFrom string `json:"transcoded_from,omitempty"`
}

// StreamInfo is the stream object: one media session on one protocol connection.
type StreamInfo struct {
	SID        string   `json:"sid"`
	Direction  string   `json:"direction"`
	Protocol   string   `json:"protocol"`
	State      string   `json:"state"`
	RemoteAddr string   `json:"remote_addr,omitempty"`
	Tracks     []string `json:"tracks"`

	BitrateKbps        *float64 `json:"bitrate_kbps,omitempty"`
	FPS                *float64 `json:"fps,omitempty"`
	PacketsLost        *int64   `json:"packets_lost,omitempty"`
	JitterMs           *float64 `json:"jitter_ms,omitempty"`
	RTTMs              *float64 `json:"rtt_ms,omitempty"`
	Retransmits        *int64   `json:"retransmits,omitempty"`
	Bytes              *int64   `json:"bytes,omitempty"`
	DroppedFrames      *int64   `json:"dropped_frames,omitempty"`
	KeyframeIntervalMs *int64   `json:"keyframe_interval_ms,omitempty"`
}

// RecordingInfo is the recording object.
type RecordingInfo struct {
	ID          string   `json:"id"`
	Room        string   `json:"room"`
	Participant string   `json:"participant,omitempty"`
	Tracks      []string `json:"tracks"`
	Format      string   `json:"format"`
	// Status is starting, active, paused, ending, complete or failed.
	Status     string     `json:"status"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	EndedAt    *time.Time `json:"ended_at,omitempty"`
	DurationMs int64      `json:"duration_ms"`
	// PausedMs is the time spent paused so far, the current pause included.
	PausedMs  int64           `json:"paused_ms"`
	SizeBytes int64           `json:"size_bytes"`
	Files     []RecordingFile `json:"files"`
	Error     *ErrorInfo      `json:"error,omitempty"`
	// Layout names the layout of a composite recording ("" for a plain one), and
	// Participants who is in its picture now.
	Layout       string   `json:"layout,omitempty"`
	Participants []string `json:"participants,omitempty"`
}

// RecordingFile is one file of a recording; Path is relative to the recordings directory.
type RecordingFile struct {
	Path       string    `json:"path"`
	SizeBytes  int64     `json:"size_bytes"`
	DurationMs int64     `json:"duration_ms"`
	StartedAt  time.Time `json:"started_at"`
	// Location is "local", or the object URL once uploaded (never with credentials).
	Location   string     `json:"location,omitempty"`
	UploadedAt *time.Time `json:"uploaded_at,omitempty"`
}

// BroadcastInfo is the broadcast object. URL never carries the stream key.
type BroadcastInfo struct {
	ID          string `json:"id"`
	Room        string `json:"room"`
	Participant string `json:"participant,omitempty"`
	// Layout and Participants describe a broadcast of the whole room (participant
	// "composite"): the layout and who is in the picture now.
	Layout       string     `json:"layout,omitempty"`
	Participants []string   `json:"participants,omitempty"`
	URL          string     `json:"url"`
	Status       string     `json:"status"`
	StartedAt    *time.Time `json:"started_at,omitempty"`
	EndedAt      *time.Time `json:"ended_at,omitempty"`
	BytesSent    int64      `json:"bytes_sent"`
	Reconnects   int        `json:"reconnects"`
	Error        *ErrorInfo `json:"error,omitempty"`
	// Destinations are the broadcast's destinations, each with its own state; URL above is
	// the one the event concerns (or the first).
	Destinations []BroadcastDestination `json:"destinations,omitempty"`
}

// BroadcastDestination is one destination of a broadcast (an RTMP/RTMPS URL). URL never
// carries the stream key.
type BroadcastDestination struct {
	ID         string     `json:"id"`
	URL        string     `json:"url"`
	Status     string     `json:"status"`
	BytesSent  int64      `json:"bytes_sent"`
	Reconnects int        `json:"reconnects"`
	Error      *ErrorInfo `json:"error,omitempty"`
}

// IngestInfo is the ingest object. URL never carries credentials; a stream key never appears.
type IngestInfo struct {
	ID                  string `json:"id"`
	Type                string `json:"type"`
	Room                string `json:"room"`
	ParticipantIdentity string `json:"participant_identity,omitempty"`
	URL                 string `json:"url,omitempty"`
	State               string `json:"state"`
	Retries             int    `json:"retries"`
}

// Speaker is one entry of speakers.changed.
type Speaker struct {
	Identity string `json:"identity"`
	SID      string `json:"sid"`
	Level    int    `json:"level"`
}
