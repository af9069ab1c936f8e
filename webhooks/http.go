package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluice-media/sluice/sfu/api"
)

// HTTP serves the events and webhooks routes of the API (shared/DESIGN.md "HTTP API"). Safe
// for concurrent use; a follower's stream ends when its request ends or CloseFollowers.
type HTTP struct {
	Log       *Log
	Deliverer *Deliverer
	// Heartbeat is the period of SSE comment lines that keep idle connections open (default 15 s).
	Heartbeat time.Duration
	// WriteTimeout bounds each write to a follower (default DefaultFollowerTimeout): one that
	// stops reading is cut off once the socket buffers and one batch are full and this passed,
	// instead of holding its goroutines and log consumer for ever.
	WriteTimeout time.Duration

	once   sync.Once
	ctx    context.Context // ends every follower when cancelled
	cancel context.CancelFunc
}

func (h *HTTP) followers() context.Context {
	h.once.Do(func() { h.ctx, h.cancel = context.WithCancel(context.Background()) })
	return h.ctx
}

// CloseFollowers ends every SSE stream (and refuses new ones), so that the HTTP server's
// graceful shutdown does not wait for them. Idempotent.
func (h *HTTP) CloseFollowers() {
	h.followers()
	h.cancel()
}

// Routes are the patterns HTTP serves, each to be wrapped with the admin gate.
func (h *HTTP) Routes() map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{
		"GET /v1/events":                   h.events,
		"GET /v1/webhooks":                 h.list,
		"POST /v1/webhooks":                h.add,
		"GET /v1/webhooks/{id}":            h.get,
		"DELETE /v1/webhooks/{id}":         h.remove,
		"POST /v1/webhooks/{id}/test":      h.test,
		"GET /v1/webhooks/{id}/deliveries": h.deliveries,
		"POST /v1/webhooks/{id}/replay":    h.replay,
		"GET /v1/webhooks/{id}/secret":     h.secret,
	}
}

// Register mounts the routes on srv behind gate.Admin.
func (h *HTTP) Register(srv *api.Server, gate *api.Gate) {
	for pattern, fn := range h.Routes() {
		srv.Handle(pattern, gate.Admin(fn))
	}
}

// EventsPage is the body of GET /v1/events without follow.
type EventsPage struct {
	Events []json.RawMessage `json:"events"`
	// Next is the seq to pass as since to read on (the last seq returned, or the since given).
	Next uint64 `json:"next"`
	// LastSeq is the newest seq in the log.
	LastSeq uint64 `json:"last_seq"`
}

// MaxPage bounds the limit of one events page.
const MaxPage = 1000

func (h *HTTP) events(w http.ResponseWriter, r *http.Request) {
	qs := r.URL.Query()
	q := Query{Room: qs.Get("room")}
	for _, t := range qs["type"] {
		for _, g := range strings.Split(t, ",") {
			if g = strings.TrimSpace(g); g != "" {
				q.Types = append(q.Types, g)
			}
		}
	}
	if !matchAnyValid(q.Types) {
		api.WriteError(w, api.Errorf(http.StatusBadRequest, api.CodeBadRequest, "type: not a glob"))
		return
	}
	after, since, err := ParseSince(qs.Get("since"), h.Log.clock())
	if err != nil {
		api.WriteError(w, api.Errorf(http.StatusBadRequest, api.CodeBadRequest, "%v", err))
		return
	}
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		n, err := strconv.ParseUint(id, 10, 64)
		if err != nil {
			api.WriteError(w, api.Errorf(http.StatusBadRequest, api.CodeBadRequest, "Last-Event-ID: %q is not a seq", id))
			return
		}
		after, since = n, time.Time{}
	}
	q.After, q.Since = after, since
	if follow := qs.Get("follow"); follow == "1" || follow == "true" {
		h.follow(w, r, q, qs.Get("since") != "" || r.Header.Get("Last-Event-ID") != "")
		return
	}
	limit := 100
	if s := qs.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > MaxPage {
			api.WriteError(w, api.Errorf(http.StatusBadRequest, api.CodeBadRequest, "limit: 1 to %d", MaxPage))
			return
		}
		limit = n
	}
	page, err := h.page(r.Context(), q, qs.Get("since") != "", limit)
	if err != nil {
		api.WriteError(w, api.Errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "%v", err))
		return
	}
	api.WriteJSON(w, http.StatusOK, page)
}

func matchAnyValid(globs []string) bool {
	for _, g := range globs {
		if _, err := path.Match(g, ""); err != nil {
			return false
		}
	}
	return true
}

// page reads one page: from since when given, else the newest limit events.
func (h *HTTP) page(ctx context.Context, q Query, fromSince bool, limit int) (*EventsPage, error) {
	last, err := h.Log.LastSeq(ctx)
	if err != nil {
		return nil, err
	}
	page := &EventsPage{Events: []json.RawMessage{}, Next: q.After, LastSeq: last}
	if !fromSince {
		// the newest: scan a bounded window before the end, keep the last limit matches
		window := uint64(limit)
		if q.Room != "" || len(q.Types) > 0 {
			window = 10000
		}
		if last > window {
			q.After = last - window
		}
		var ring []Record
		err = h.Log.Read(ctx, q, func(rec Record) error {
			ring = append(ring, rec)
			if len(ring) > limit {
				ring = ring[1:]
			}
			return nil
		})
		for _, rec := range ring {
			page.Events = append(page.Events, rec.Body)
			page.Next = rec.Seq
		}
		if len(ring) == 0 {
			page.Next = last
		}
		return page, err
	}
	err = h.Log.Read(ctx, q, func(rec Record) error {
		page.Events = append(page.Events, rec.Body)
		page.Next = rec.Seq
		if len(page.Events) >= limit {
			return ErrStop
		}
		return nil
	})
	return page, err
}

// follow streams events as Server-Sent Events: "id: <seq>" and "data: <event JSON>" per event,
// a comment line every Heartbeat. Without since or Last-Event-ID it starts with the next event.
func (h *HTTP) follow(w http.ResponseWriter, r *http.Request, q Query, fromGiven bool) {
	if _, ok := w.(http.Flusher); !ok {
		api.WriteError(w, api.Errorf(http.StatusInternalServerError, api.CodeInternal, "streaming unsupported"))
		return
	}
	if !fromGiven {
		last, err := h.Log.LastSeq(r.Context())
		if err != nil {
			api.WriteError(w, api.Errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "%v", err))
			return
		}
		q.After = last
	}
	rc := http.NewResponseController(w)
	timeout := h.WriteTimeout
	if timeout <= 0 {
		timeout = DefaultFollowerTimeout
	}
	// send writes and flushes b within the write timeout; false when the follower is gone or stuck.
	send := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(timeout))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(h.followers(), cancel)
	defer stop()

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// the starting position as an id without data: a client that reconnects before the first
	// event resumes from here (EventSource updates its last event id from it, too)
	hello := "retry: 1000\n: following the sluice event log\n"
	if q.Since.IsZero() {
		hello += "id: " + strconv.FormatUint(q.After, 10) + "\n"
	}
	if !send([]byte(hello + "\n")) {
		return
	}

	recs := make(chan Record, 64)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(recs)
		_ = h.Log.Follow(ctx, q, func(rec Record) error {
			select {
			case recs <- rec:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	defer wg.Wait()
	defer cancel()
	beat := h.Heartbeat
	if beat <= 0 {
		beat = 15 * time.Second
	}
	tick := time.NewTicker(beat)
	defer tick.Stop()
	buf := make([]byte, 0, 4096)
	for {
		select {
		case rec, ok := <-recs:
			if !ok {
				return
			}
			buf = append(buf[:0], "id: "...)
			buf = strconv.AppendUint(buf, rec.Seq, 10)
			buf = append(buf, "\ndata: "...)
			buf = append(buf, rec.Body...)
			buf = append(buf, "\n\n"...)
			// drain what is ready before flushing
			for more := true; more && len(buf) < 64<<10; {
				select {
				case rec, ok := <-recs:
					if !ok {
						more = false
						break
					}
					buf = append(buf, "id: "...)
					buf = strconv.AppendUint(buf, rec.Seq, 10)
					buf = append(buf, "\ndata: "...)
					buf = append(buf, rec.Body...)
					buf = append(buf, "\n\n"...)
				default:
					more = false
				}
			}
			if !send(buf) {
				return
			}
		case <-tick.C:
			if !send([]byte(": heartbeat\n\n")) {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

func (h *HTTP) list(w http.ResponseWriter, r *http.Request) {
	if err := h.Deliverer.waitReady(r.Context()); err != nil {
		writeErr(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, map[string]any{"webhooks": h.Deliverer.Endpoints()})
}

func (h *HTTP) get(w http.ResponseWriter, r *http.Request) {
	if err := h.Deliverer.waitReady(r.Context()); err != nil {
		writeErr(w, err)
		return
	}
	ep, err := h.Deliverer.Endpoint(r.PathValue("id"))
	if err != nil {
		writeErr(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, ep)
}

func (h *HTTP) add(w http.ResponseWriter, r *http.Request) {
	var req AddRequest
	if err := api.DecodeJSON(w, r, &req); err != nil {
		api.WriteError(w, err)
		return
	}
	added, err := h.Deliverer.Add(r.Context(), req)
	if err != nil {
		writeErr(w, err)
		return
	}
	api.WriteJSON(w, http.StatusCreated, added)
}

func (h *HTTP) remove(w http.ResponseWriter, r *http.Request) {
	if err := h.Deliverer.Remove(r.Context(), r.PathValue("id")); err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *HTTP) test(w http.ResponseWriter, r *http.Request) {
	res, err := h.Deliverer.Test(r.Context(), r.PathValue("id"))
	if err != nil {
		writeErr(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, res)
}

func (h *HTTP) deliveries(w http.ResponseWriter, r *http.Request) {
	qs := r.URL.Query()
	q := DeliveryQuery{Status: qs.Get("status")}
	if qs.Get("failed") == "1" || qs.Get("failed") == "true" {
		q.Status = StatusFailed
	}
	if s := qs.Get("since"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			api.WriteError(w, api.Errorf(http.StatusBadRequest, api.CodeBadRequest, "since: %q is not a duration such as 24h", s))
			return
		}
		q.Since = h.Log.clock().Add(-d)
	}
	if s := qs.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > MaxPage {
			api.WriteError(w, api.Errorf(http.StatusBadRequest, api.CodeBadRequest, "limit: 1 to %d", MaxPage))
			return
		}
		q.Limit = n
	}
	list, err := h.Deliverer.Deliveries(r.Context(), r.PathValue("id"), q)
	if err != nil {
		writeErr(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, map[string]any{"deliveries": list})
}

func (h *HTTP) replay(w http.ResponseWriter, r *http.Request) {
	var req ReplayRequest
	if err := api.DecodeJSON(w, r, &req); err != nil {
		api.WriteError(w, err)
		return
	}
	if req.Since == "" {
		api.WriteError(w, api.Errorf(http.StatusBadRequest, api.CodeBadRequest, "since: required (a seq, or a duration such as 2h)"))
		return
	}
	res, err := h.Deliverer.Replay(r.Context(), r.PathValue("id"), req)
	if err != nil {
		writeErr(w, err)
		return
	}
	api.WriteJSON(w, http.StatusAccepted, res)
}

func (h *HTTP) secret(w http.ResponseWriter, r *http.Request) {
	if err := h.Deliverer.waitReady(r.Context()); err != nil {
		writeErr(w, err)
		return
	}
	s, err := h.Deliverer.Secret(r.PathValue("id"))
	if err != nil {
		writeErr(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, map[string]string{"secret": s})
}

func writeErr(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrEndpointNotFound):
		api.WriteError(w, api.Errorf(http.StatusNotFound, api.CodeNotFound, "%v", err))
	case errors.Is(err, ErrConfigEndpoint):
		api.WriteError(w, api.Errorf(http.StatusConflict, api.CodeConflict, "%v", err))
	case errors.Is(err, ErrInvalidEndpoint):
		api.WriteError(w, api.Errorf(http.StatusBadRequest, api.CodeBadRequest, "%v", err))
	case strings.HasPrefix(err.Error(), "since:"):
		api.WriteError(w, api.Errorf(http.StatusBadRequest, api.CodeBadRequest, "%v", err))
	default:
		api.WriteError(w, api.Errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "%v", err))
	}
}
