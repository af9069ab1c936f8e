package recorder

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/sluice-media/sluice/egress/composite"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
)

// StartRequest is the body of POST /v1/recordings.
type StartRequest struct {
	Room        string `json:"room"`
	Participant string `json:"participant,omitempty"`
	Track       string `json:"track,omitempty"`
	Format      string `json:"format,omitempty"`
	Segment     string `json:"segment,omitempty"`
	MaxDuration string `json:"max_duration,omitempty"`
	// Options, with a layout, record the whole room composed, in one file.
	composite.Options
	// Storage names the storage target to upload to ("": recording.storage; "local": none).
	Storage string `json:"storage,omitempty"`
}

// Register mounts the recordings API on srv behind gate's admin check, and the "recordings"
// section of /v1/status. Call before serving.
func (r *Recorder) Register(srv *api.Server, gate *api.Gate) {
	srv.Handle("GET /v1/recordings", gate.Admin(http.HandlerFunc(r.httpList)))
	srv.Handle("POST /v1/recordings", gate.Admin(http.HandlerFunc(r.httpStart)))
	srv.Handle("GET /v1/recordings/{id}", gate.Admin(http.HandlerFunc(r.httpGet)))
	srv.Handle("DELETE /v1/recordings/{id}", gate.Admin(http.HandlerFunc(r.httpDelete)))
	srv.Handle("POST /v1/recordings/{id}/stop", gate.Admin(http.HandlerFunc(r.httpStop)))
	srv.Handle("POST /v1/recordings/{id}/pause", gate.Admin(http.HandlerFunc(r.httpPause)))
	srv.Handle("POST /v1/recordings/{id}/resume", gate.Admin(http.HandlerFunc(r.httpResume)))
	srv.Handle("GET /v1/recordings/{id}/files/{name}", r.httpFile(gate))
	srv.Handle("GET /v1/recordings/{id}/index.m3u8", r.httpHLS(gate))
	srv.Handle("GET /v1/recordings/{id}/hls/{part}", r.httpHLSPart(gate))
	srv.Handle("GET /v1/playback", r.httpPlayback(gate))
	srv.Handle("GET /v1/playback/list", r.httpPlaybackList(gate))
	srv.AddStatus("recordings", func(context.Context) any { return r.Active() })
}

func (r *Recorder) httpList(w http.ResponseWriter, req *http.Request) {
	q := req.URL.Query()
	api.WriteJSON(w, http.StatusOK, map[string]any{"recordings": r.List(q.Get("room"), q.Get("status"))})
}

func parseDuration(field, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, api.Errorf(http.StatusBadRequest, api.CodeBadRequest, "%s: %q is not a positive duration", field, s)
	}
	return d, nil
}

func (r *Recorder) httpStart(w http.ResponseWriter, req *http.Request) {
	var body StartRequest
	if err := api.DecodeJSON(w, req, &body); err != nil {
		api.WriteError(w, err)
		return
	}
	seg, err := parseDuration("segment", body.Segment)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	maxDur, err := parseDuration("max_duration", body.MaxDuration)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	if err := r.hub.Admit(sfu.ParticipantSpec{Kind: "recording", RemoteAddr: req.RemoteAddr}); err != nil {
		api.WriteError(w, err) // 503 overloaded
		return
	}
	rec, err := r.Start(Request{Room: body.Room, Participant: body.Participant, Track: body.Track, Format: body.Format, Segment: seg,
		MaxDuration: maxDur, Storage: body.Storage, Composite: body.Options})
	if err != nil {
		api.WriteError(w, apiError(err))
		return
	}
	api.WriteJSON(w, http.StatusCreated, rec)
}

// apiError maps recorder errors to API errors.
func apiError(err error) error {
	switch {
	case errors.Is(err, ErrNotFound):
		return api.Errorf(http.StatusNotFound, api.CodeNotFound, "%v", err)
	case errors.Is(err, sfu.ErrRoomNotFound), errors.Is(err, sfu.ErrParticipantNotFound):
		return api.Errorf(http.StatusNotFound, api.CodeNotFound, "%v", err)
	case errors.Is(err, ErrNotActive), errors.Is(err, ErrConflict):
		return api.Errorf(http.StatusConflict, api.CodeConflict, "%v", err)
	case errors.Is(err, ErrClosed):
		return api.Errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "%v", err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return api.Errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "timed out")
	}
	return api.Errorf(http.StatusBadRequest, api.CodeBadRequest, "%v", err)
}

func (r *Recorder) httpGet(w http.ResponseWriter, req *http.Request) {
	rec, err := r.Get(req.PathValue("id"))
	if err != nil {
		api.WriteError(w, apiError(err))
		return
	}
	api.WriteJSON(w, http.StatusOK, rec)
}

func (r *Recorder) httpDelete(w http.ResponseWriter, req *http.Request) {
	rec, err := r.Delete(req.PathValue("id"), ReasonRequested)
	if err != nil {
		api.WriteError(w, apiError(err))
		return
	}
	api.WriteJSON(w, http.StatusOK, rec)
}

// stopTimeout bounds how long a stop request waits for the files to be closed.
const stopTimeout = 30 * time.Second

func (r *Recorder) httpStop(w http.ResponseWriter, req *http.Request) {
	ctx, cancel := context.WithTimeout(req.Context(), stopTimeout)
	defer cancel()
	rec, err := r.Stop(ctx, req.PathValue("id"))
	if err != nil {
		api.WriteError(w, apiError(err))
		return
	}
	api.WriteJSON(w, http.StatusOK, rec)
}

func (r *Recorder) httpPause(w http.ResponseWriter, req *http.Request) {
	ctx, cancel := context.WithTimeout(req.Context(), stopTimeout)
	defer cancel()
	rec, err := r.Pause(ctx, req.PathValue("id"))
	if err != nil {
		api.WriteError(w, apiError(err))
		return
	}
	api.WriteJSON(w, http.StatusOK, rec)
}

func (r *Recorder) httpResume(w http.ResponseWriter, req *http.Request) {
	ctx, cancel := context.WithTimeout(req.Context(), stopTimeout)
	defer cancel()
	rec, err := r.Resume(ctx, req.PathValue("id"))
	if err != nil {
		api.WriteError(w, apiError(err))
		return
	}
	api.WriteJSON(w, http.StatusOK, rec)
}
