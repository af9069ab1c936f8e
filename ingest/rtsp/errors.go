package rtsp

import "errors"

// Sentinel errors of camera pulls and RTSP sessions. Callers compare with errors.Is.
var (
	// ErrAuth is returned when a camera refuses the URL's credentials (or asks for some the URL
	// does not have). Its message never carries the password.
	ErrAuth = errors.New("authentication failed: the camera refused the user name or password")
	// ErrNoMedia is returned when a connected camera sends no RTP for read_timeout.
	ErrNoMedia = errors.New("no media from the camera")
	// ErrNoTracks is returned when a camera or publisher offers no track in a codec sluice takes.
	ErrNoTracks = errors.New("no track in a supported codec")
	// ErrNoServer is returned when no RTSP server answered at a camera's address (for whatever
	// network reason: the reason is not shown, see classifySetup).
	ErrNoServer = errors.New("no RTSP server answered")
	// ErrRemoved is returned when the camera's participant was removed from its room (kicked,
	// room deleted): the pull reconnects and joins again.
	ErrRemoved = errors.New("removed from the room")

	// errStopped is the cancellation cause of a pull whose ingest was deleted.
	errStopped = errors.New("ingest stopped")
)
