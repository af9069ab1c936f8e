package composite

import (
	"context"
	"net/http"

	"github.com/sluice-media/sluice/sfu/api"
)

// UpdateRequest is the body of PATCH /v1/rooms/{room}/composite.
type UpdateRequest struct {
	Layout string `json:"layout"`
	// Participant pins the large tile (single, speaker); "" lets the composite choose.
	Participant string `json:"participant"`
}

// Routes mounts the composites API on s, behind the admin gate:
//
//	GET|PATCH /v1/rooms/{room}/composite
//
// and the "composites" entry of /v1/status.
func (m *Manager) Routes(s *api.Server, g *api.Gate) {
	get := func(w http.ResponseWriter, r *http.Request) *Composite {
		c := m.Get(r.PathValue("room"))
		if c == nil {
			api.WriteError(w, api.Errorf(http.StatusNotFound, api.CodeNotFound, "no composite runs in room %q: start a broadcast or recording with a layout", r.PathValue("room")))
		}
		return c
	}
	s.Handle("GET /v1/rooms/{room}/composite", g.Admin(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c := get(w, r); c != nil {
			api.WriteJSON(w, http.StatusOK, c.Info())
		}
	})))
	s.Handle("PATCH /v1/rooms/{room}/composite", g.Admin(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req UpdateRequest
		if err := api.DecodeJSON(w, r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		c := get(w, r)
		if c == nil {
			return
		}
		if req.Layout == "" {
			req.Layout = c.Info().Layout
		}
		if err := c.SetLayout(req.Layout, req.Participant); err != nil {
			api.WriteError(w, api.Errorf(http.StatusBadRequest, api.CodeBadRequest, "%s", err.Error()))
			return
		}
		api.WriteJSON(w, http.StatusOK, c.Info())
	})))
	s.AddStatus("composites", func(context.Context) any {
		m.mu.Lock()
		all := make([]*Composite, 0, len(m.rooms))
		for _, c := range m.rooms {
			all = append(all, c)
		}
		m.mu.Unlock()
		out := map[string]Info{}
		for _, c := range all {
			out[c.Room()] = c.Info()
		}
		return out
	})
}
