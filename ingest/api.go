package ingest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/sluice-media/sluice/sfu/api"
)

// Endpoints are the ports publishers connect to, for the settings an ingest shows its user.
type Endpoints struct {
	RTMPPort int
	RTSPPort int
	SRTPort  int
}

// View is an ingest as the API shows one: with where and how to publish to it.
type View struct {
	Ingest
	// Publish holds what to type into OBS or an encoder (rtmp_server, stream_key, rtsp_url,
	// srt_url).
	Publish map[string]string `json:"publish,omitempty"`
}

// Routes mounts GET|POST /v1/ingests and GET|DELETE /v1/ingests/{id} behind the admin gate.
// Listings never carry stream keys or URL credentials; creation and GET of one ingest show the
// stream key to the admin who needs to configure the encoder.
func (s *Store) Routes(srv *api.Server, gate *api.Gate, ep Endpoints, clock func() time.Time) {
	srv.Handle("GET /v1/ingests", gate.Admin(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		list := []Ingest{}
		for _, ing := range s.List() {
			list = append(list, ing.Redacted())
		}
		api.WriteJSON(w, http.StatusOK, map[string]any{"ingests": list})
	})))
	srv.Handle("POST /v1/ingests", gate.Admin(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var d Definition
		if err := api.DecodeJSON(w, r, &d); err != nil {
			api.WriteError(w, err)
			return
		}
		ing, err := s.Create(d, clock())
		switch {
		case errors.Is(err, ErrExists):
			api.WriteError(w, api.Errorf(http.StatusConflict, api.CodeConflict, "%v", err))
			return
		case errors.As(err, new(*InvalidError)):
			api.WriteError(w, api.Errorf(http.StatusBadRequest, api.CodeBadRequest, "%v", err))
			return
		case err != nil:
			api.WriteError(w, err)
			return
		}
		ing.URL = RedactURL(ing.URL)
		api.WriteJSON(w, http.StatusCreated, view(ing, r, ep))
	})))
	srv.Handle("GET /v1/ingests/{id}", gate.Admin(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ing, ok := s.Get(r.PathValue("id"))
		if !ok {
			api.WriteError(w, api.Errorf(http.StatusNotFound, api.CodeNotFound, "ingest %q not found", r.PathValue("id")))
			return
		}
		ing.URL = RedactURL(ing.URL)
		api.WriteJSON(w, http.StatusOK, view(ing, r, ep))
	})))
	srv.Handle("DELETE /v1/ingests/{id}", gate.Admin(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch err := s.Delete(r.PathValue("id")); {
		case errors.Is(err, ErrNotFound):
			api.WriteError(w, api.Errorf(http.StatusNotFound, api.CodeNotFound, "ingest %q not found", r.PathValue("id")))
		case errors.Is(err, ErrFromConfig):
			api.WriteError(w, api.Errorf(http.StatusConflict, api.CodeConflict, "ingest %q is defined in the config file: remove it there", r.PathValue("id")))
		case err != nil:
			api.WriteError(w, err)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	})))
	srv.AddStatus("ingests", func(context.Context) any {
		list := []Ingest{}
		for _, ing := range s.List() {
			list = append(list, ing.Redacted())
		}
		return list
	})
}

// view adds the publish settings, with the host the client used to reach the API.
func view(ing Ingest, r *http.Request, ep Endpoints) View {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		host = "[" + host + "]"
	}
	v := View{Ingest: ing}
	switch ing.Type {
	case TypeRTMP:
		v.Publish = map[string]string{
			"rtmp_server": fmt.Sprintf("rtmp://%s:%d/live", host, ep.RTMPPort),
			"stream_key":  ing.StreamKey,
		}
	case TypeRTSPPush:
		v.Publish = map[string]string{
			"rtsp_url": fmt.Sprintf("rtsp://%s:%d/%s?key=%s", host, ep.RTSPPort, ing.Room, ing.StreamKey),
		}
	case TypeSRT:
		v.Publish = map[string]string{"srt_url": SRTURL(host, ep.SRTPort, ing.StreamKey, ing.Passphrase)}
	}
	return v
}

// SRTURL is the URL an SRT publisher (OBS: Server, with an empty Stream Key) is given for a
// stream key: the stream id names the mode and the key, and the passphrase, when set, turns on
// AES encryption.
func SRTURL(host string, port int, key, passphrase string) string {
	u := fmt.Sprintf("srt://%s:%d?streamid=publish:%s", host, port, key)
	if passphrase != "" {
		u += "&passphrase=" + url.QueryEscape(passphrase)
	}
	return u
}
