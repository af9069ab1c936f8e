package sfutest

import "github.com/sluice-media/sluice/sfu"

// Catalogue is every event type of shared/EVENTS.md, its Additions included, in its order.
// Tests check that each has a golden wire form and that some end-to-end test emits it.
var Catalogue = []string{
	sfu.EventRoomStarted, sfu.EventRoomUpdated, sfu.EventRoomFinished,
	sfu.EventParticipantJoined, sfu.EventParticipantUpdated, sfu.EventParticipantLeft, sfu.EventParticipantQuality,
	sfu.EventTrackPublished, sfu.EventTrackUpdated, sfu.EventTrackMuted, sfu.EventTrackUnmuted,
	sfu.EventTrackInterrupted, sfu.EventTrackRecovered, sfu.EventTrackUnpublished,
	sfu.EventTrackSubscribed, sfu.EventTrackUnsubscribed, sfu.EventTrackSubscriptionFailed,
	sfu.EventStreamPublishing, sfu.EventStreamUnpublished, sfu.EventStreamPlaying, sfu.EventStreamStopped,
	sfu.EventStreamFailed, sfu.EventStreamStats, sfu.EventSpeakersChanged,
	sfu.EventIngestCreated, sfu.EventIngestDeleted, sfu.EventIngestStateChanged,
	sfu.EventRecordingStarted, sfu.EventRecordingUpdated, sfu.EventRecordingEnded, sfu.EventRecordingFailed,
	sfu.EventBroadcastStarted, sfu.EventBroadcastReconnecting, sfu.EventBroadcastEnded, sfu.EventBroadcastFailed,
	sfu.EventAuthFailed, sfu.EventServerStarted, sfu.EventServerStopping,
	// Additions (December 2026)
	sfu.EventRecordingDeleted, sfu.EventBroadcastUpdated, sfu.EventStreamUpdated, sfu.EventNodeJoined, sfu.EventNodeLeft,
}

// Pending are the catalogue types that other open issues build: nothing emits them yet, and
// the coverage check names the issue instead of failing.
var Pending = map[string]int{
	sfu.EventNodeJoined: 23, // cluster
	sfu.EventNodeLeft:   23,
}
