package sfu

import "errors"

// Sentinel errors of the core. Callers compare with errors.Is.
var (
	// ErrRoomClosed is returned when an operation targets a room that has finished.
	ErrRoomClosed = errors.New("room closed")
	// ErrRoomNotFound is returned for a room that does not exist.
	ErrRoomNotFound = errors.New("room not found")
	// ErrParticipantClosed is returned when an operation targets a participant that has left.
	ErrParticipantClosed = errors.New("participant left")
	// ErrParticipantNotFound is returned for an identity that is not in the room.
	ErrParticipantNotFound = errors.New("participant not found")
	// ErrDuplicateIdentity is returned when an identity is taken and the join may not replace it.
	ErrDuplicateIdentity = errors.New("identity already in room")
	// ErrTrackClosed is returned when subscribing to, or the subscription ends because of, a
	// track that was unpublished.
	ErrTrackClosed = errors.New("track closed")
	// ErrInvalidName is returned for room or identity names that break the naming rules.
	ErrInvalidName = errors.New("invalid name")
)
