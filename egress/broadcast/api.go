package broadcast

import (
	"context"
	"errors"
	"net/http"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
)

// Routes mounts the broadcasts API on s, behind the admin gate:
//
//	GET|POST /v1/broadcasts   GET|PATCH /v1/broadcasts/{id}   POST /v1/broadcasts/{id}/stop
//
// and the "broadcasts" entry of /v1/status. Responses never carry a stream key.
func (m *Manager) Routes(s *api.Server, g *api.Gate) {
	s.Handle("GET /v1/broadcasts", g.Admin(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		api.WriteJSON(w, http.StatusOK, map[string]any{"broadcasts": m.List()})
	})))
	s.Handle("POST /v1/broadcasts", g.Admin(http.HandlerFunc(m.handleStart)))
	s.Handle("GET /v1/broadcasts/{id}", g.Admin(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info, err := m.Get(r.PathValue("id"))
		reply(w, http.StatusOK, info, err)
	})))
	s.Handle("PATCH /v1/broadcasts/{id}", g.Admin(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req UpdateRequest
		if err := api.DecodeJSON(w, r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		info, err := m.Update(r.PathValue("id"), req)
		reply(w, http.StatusOK, info, err)
	})))
	s.Handle("POST /v1/broadcasts/{id}/stop", g.Admin(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info, err := m.Stop(r.PathValue("id"))
		reply(w, http.StatusOK, info, err)
	})))
	s.AddStatus("broadcasts", func(context.Context) any { return m.List() })
}

func (m *Manager) handleStart(w http.ResponseWriter, r *http.Request) {
	var req StartRequest
	if err := api.DecodeJSON(w, r, &req); err != nil {
		api.WriteError(w, err)
		return
	}
	if err := m.hub.Admit(sfu.ParticipantSpec{Kind: "broadcast", RemoteAddr: r.RemoteAddr}); err != nil {
		api.WriteError(w, err) // 503 overloaded
		return
	}
	info, err := m.Start(req)
	if err != nil && info != nil {
		// The broadcast was made and failed at once (no transcoder, a codec RTMP cannot carry):
		// it is listed as failed, with its broadcast.failed event.
		api.WriteJSON(w, http.StatusUnprocessableEntity, map[string]any{
			"error":     &api.Error{Code: info.Error.Code, Message: info.Error.Message},
			"broadcast": info,
		})
		return
	}
	reply(w, http.StatusCreated, info, err)
}

func reply(w http.ResponseWriter, status int, info *sfu.BroadcastInfo, err error) {
	switch {
	case err == nil:
		api.WriteJSON(w, status, info)
	case errors.Is(err, ErrNotFound):
		api.WriteError(w, api.Errorf(http.StatusNotFound, api.CodeNotFound, "%s", err.Error()))
	case errors.Is(err, ErrFinished):
		api.WriteError(w, api.Errorf(http.StatusConflict, api.CodeConflict, "%s", err.Error()))
	case errors.Is(err, ErrInvalid):
		api.WriteError(w, api.Errorf(http.StatusBadRequest, api.CodeBadRequest, "%s", err.Error()))
	case errors.Is(err, ErrClosed):
		api.WriteError(w, api.Errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "%s", err.Error()))
	default:
		api.WriteError(w, err)
	}
}
