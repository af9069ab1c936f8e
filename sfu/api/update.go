package api

import (
	"errors"
	"net/http"
	"unicode/utf8"

	"github.com/sluice-media/sluice/sfu"
)

// Limits of the values a PATCH may set.
const (
	MaxMetadataBytes = 64 << 10
	MaxNameBytes     = 256
)

// UpdateRoomRequest is the body of PATCH /v1/rooms/{room}: fields left out stay as they are.
type UpdateRoomRequest struct {
	Metadata *string `json:"metadata,omitempty"`
}

// UpdateParticipantRequest is the body of PATCH /v1/rooms/{room}/participants/{identity}.
type UpdateParticipantRequest struct {
	Name     *string `json:"name,omitempty"`
	Metadata *string `json:"metadata,omitempty"`
}

// MuteRequest is the body of POST /v1/rooms/{room}/participants/{identity}/tracks/{sid}/mute.
type MuteRequest struct {
	Muted *bool `json:"muted"`
}

func checkText(field string, v *string, limit int) error {
	if v == nil {
		return nil
	}
	if len(*v) > limit || !utf8.ValidString(*v) {
		return Errorf(http.StatusBadRequest, CodeBadRequest, "%s: at most %d bytes of UTF-8", field, limit)
	}
	return nil
}

// closedOr404 answers an operation on something that ended meanwhile as not found.
func closedOr404(w http.ResponseWriter, err error, what string) {
	if sfu.IsClosed(err) || errors.Is(err, sfu.ErrParticipantNotFound) {
		WriteError(w, Errorf(http.StatusNotFound, CodeNotFound, "%s is gone", what))
		return
	}
	WriteError(w, Errorf(http.StatusServiceUnavailable, CodeUnavailable, "%v", err))
}

// decodeUpdate reads a PATCH body into req and checks the text fields name and metadata point
// to (in req; name may be nil); false when it answered an error.
func decodeUpdate(w http.ResponseWriter, r *http.Request, req any, name, metadata **string) bool {
	err := DecodeJSON(w, r, req)
	if err == nil {
		err = checkText("metadata", *metadata, MaxMetadataBytes)
	}
	if err == nil && name != nil {
		err = checkText("name", *name, MaxNameBytes)
	}
	if err != nil {
		WriteError(w, err)
		return false
	}
	return true
}

func (s *Server) updateRoom(w http.ResponseWriter, r *http.Request) {
	var req UpdateRoomRequest
	if !decodeUpdate(w, r, &req, nil, &req.Metadata) {
		return
	}
	room := s.room(w, r)
	if room == nil {
		return
	}
	if req.Metadata != nil {
		if err := room.SetMetadata(*req.Metadata); err != nil {
			closedOr404(w, err, "room "+room.Name())
			return
		}
	}
	WriteJSON(w, http.StatusOK, room.Info())
}

// participant finds the path's participant, answering 404 when it is not there.
func (s *Server) participant(w http.ResponseWriter, r *http.Request) *sfu.Participant {
	room := s.room(w, r)
	if room == nil {
		return nil
	}
	p := room.Participant(r.PathValue("identity"))
	if p == nil {
		WriteError(w, Errorf(http.StatusNotFound, CodeNotFound, "participant %q not in room %q", r.PathValue("identity"), room.Name()))
	}
	return p
}

func (s *Server) updateParticipant(w http.ResponseWriter, r *http.Request) {
	var req UpdateParticipantRequest
	if !decodeUpdate(w, r, &req, &req.Name, &req.Metadata) {
		return
	}
	p := s.participant(w, r)
	if p == nil {
		return
	}
	if err := p.Update(sfu.ParticipantUpdate{Name: req.Name, Metadata: req.Metadata}); err != nil {
		closedOr404(w, err, "participant "+p.Identity())
		return
	}
	WriteJSON(w, http.StatusOK, p.Info())
}

func (s *Server) muteTrack(w http.ResponseWriter, r *http.Request) {
	var req MuteRequest
	if err := DecodeJSON(w, r, &req); err != nil {
		WriteError(w, err)
		return
	}
	if req.Muted == nil {
		WriteError(w, Errorf(http.StatusBadRequest, CodeBadRequest, "muted: required (true or false)"))
		return
	}
	p := s.participant(w, r)
	if p == nil {
		return
	}
	t := p.Track(r.PathValue("sid"))
	if t == nil {
		WriteError(w, Errorf(http.StatusNotFound, CodeNotFound, "track %q not published by %q", r.PathValue("sid"), p.Identity()))
		return
	}
	if err := t.SetMuted(*req.Muted); err != nil {
		closedOr404(w, err, "track "+t.SID())
		return
	}
	WriteJSON(w, http.StatusOK, t.Info())
}

// SendDataRequest is the body of POST /v1/rooms/{room}/data: a data packet for the room's
// LiveKit participants (all of them, or those named), as text or base64.
type SendDataRequest struct {
	Data                  string   `json:"data,omitempty"`
	DataBase64            []byte   `json:"data_base64,omitempty"`
	Topic                 string   `json:"topic,omitempty"`
	DestinationIdentities []string `json:"destination_identities,omitempty"`
	Lossy                 bool     `json:"lossy,omitempty"`
}

// SendDataResponse answers POST /v1/rooms/{room}/data.
type SendDataResponse struct {
	// Delivered counts the participants that took the packet.
	Delivered int `json:"delivered"`
}

func (s *Server) sendData(w http.ResponseWriter, r *http.Request) {
	var req SendDataRequest
	if err := DecodeJSON(w, r, &req); err != nil {
		WriteError(w, err)
		return
	}
	if (req.Data == "") == (len(req.DataBase64) == 0) {
		WriteError(w, Errorf(http.StatusBadRequest, CodeBadRequest, "give one of data or data_base64"))
		return
	}
	payload := req.DataBase64
	if req.Data != "" {
		payload = []byte(req.Data)
	}
	room := s.room(w, r)
	if room == nil {
		return
	}
	n, err := room.SendData(&sfu.DataPacket{Payload: payload, Topic: req.Topic, Destinations: req.DestinationIdentities, Lossy: req.Lossy})
	if errors.Is(err, sfu.ErrDataTooLarge) {
		WriteError(w, Errorf(http.StatusRequestEntityTooLarge, CodeBadRequest, "%v", err))
		return
	}
	if err != nil {
		closedOr404(w, err, "room "+room.Name())
		return
	}
	WriteJSON(w, http.StatusOK, SendDataResponse{Delivered: n})
}
