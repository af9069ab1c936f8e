package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

// HeaderForwarded marks a request one node forwarded to another: it is served where it lands.
const HeaderForwarded = "Sluice-Forwarded-By"

// Router makes any node answer for the whole cluster, in front of the node's own handler:
//   - WHIP and WHEP offers for a room hosted elsewhere get 307 Temporary Redirect to the
//     owner's public URL (the client then talks to the owner directly: no relay hop); a room
//     with no owner yet is placed first, on the least loaded node.
//   - GET /v1/rooms lists the rooms of every live node, each with its node.
//   - Other /v1/rooms/{room}… requests go to the room's owner, whose answer is passed back.
//
// Safe for concurrent use.
type Router struct {
	Placer *Placer
	// Client makes the requests to other nodes (a client with a 10 s timeout when nil).
	Client *http.Client
	once   sync.Once
}

func (rt *Router) client() *http.Client {
	rt.once.Do(func() {
		if rt.Client == nil {
			rt.Client = &http.Client{Timeout: 10 * time.Second}
		}
	})
	return rt.Client
}

// Wrap returns next behind the router.
func (rt *Router) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(HeaderForwarded) != "" {
			next.ServeHTTP(w, r)
			return
		}
		parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
		switch {
		case r.Method == http.MethodPost && len(parts) >= 2 && (parts[0] == "whip" || parts[0] == "whep") && len(parts) <= 3:
			rt.redirect(w, r, next, parts[1])
		case r.Method == http.MethodGet && r.URL.Path == "/v1/rooms":
			rt.listRooms(w, r, next)
		case len(parts) >= 3 && parts[0] == "v1" && parts[1] == "rooms":
			rt.forward(w, r, next, parts[2])
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// redirect sends a WHIP or WHEP offer to the room's owner.
func (rt *Router) redirect(w http.ResponseWriter, r *http.Request, next http.Handler, room string) {
	owner, ok, err := rt.Placer.Owner(r.Context(), room, true)
	if err != nil || !ok || owner.ID == rt.Placer.reg.Self() || owner.URL == "" {
		if err != nil && !errors.Is(err, ErrNotReady) {
			rt.Placer.log.Warn("cluster: placing a room; serving it here", "room", room, "err", err)
		}
		next.ServeHTTP(w, r)
		return
	}
	target := strings.TrimSuffix(owner.URL, "/") + r.URL.RequestURI()
	w.Header().Set("Location", target)
	w.WriteHeader(http.StatusTemporaryRedirect)
}

// forward passes a room's API request to its owner.
func (rt *Router) forward(w http.ResponseWriter, r *http.Request, next http.Handler, room string) {
	owner, ok, err := rt.Placer.Owner(r.Context(), room, false)
	if err != nil || !ok || owner.ID == rt.Placer.reg.Self() || owner.URL == "" {
		next.ServeHTTP(w, r)
		return
	}
	u, err := url.Parse(owner.URL)
	if err != nil {
		next.ServeHTTP(w, r)
		return
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Header.Set(HeaderForwarded, rt.Placer.reg.Self())
		},
		Transport: rt.client().Transport,
	}
	proxy.ServeHTTP(w, r)
}

// listRooms merges every live node's GET /v1/rooms; each room gains the `node` it lives on.
// A node that does not answer is left out and named in `unreachable`.
func (rt *Router) listRooms(w http.ResponseWriter, r *http.Request, next http.Handler) {
	type answer struct {
		node  string
		rooms []map[string]any
		err   error
	}
	nodes := rt.Placer.reg.Nodes()
	answers := make([]answer, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		answers[i].node = n.ID
		if n.ID == rt.Placer.reg.Self() {
			buf := &bufferedResponse{header: http.Header{}}
			local := r.Clone(r.Context())
			next.ServeHTTP(buf, local)
			if buf.code != 0 && buf.code != http.StatusOK {
				// not allowed, or failing here: answer as this node would
				copyResponse(w, buf)
				return
			}
			answers[i].rooms, answers[i].err = decodeRooms(buf.body.Bytes())
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i].rooms, answers[i].err = rt.fetchRooms(r.Context(), n, r.Header.Get("Authorization"))
		}()
	}
	wg.Wait()
	all := []map[string]any{}
	unreachable := []string{}
	for _, a := range answers {
		if a.err != nil {
			unreachable = append(unreachable, a.node)
			continue
		}
		for _, room := range a.rooms {
			room["node"] = a.node
			all = append(all, room)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"rooms": all, "unreachable": unreachable})
}

func (rt *Router) fetchRooms(ctx context.Context, n Node, authorization string) ([]map[string]any, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(n.URL, "/")+"/v1/rooms", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set(HeaderForwarded, rt.Placer.reg.Self())
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := rt.client().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, errors.New(resp.Status)
	}
	return decodeRooms(body)
}

func decodeRooms(body []byte) ([]map[string]any, error) {
	var page struct {
		Rooms []map[string]any `json:"rooms"`
	}
	err := json.Unmarshal(body, &page)
	return page.Rooms, err
}

// bufferedResponse keeps a local handler's answer.
type bufferedResponse struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }
func (b *bufferedResponse) Write(p []byte) (int, error) {
	if b.code == 0 {
		b.code = http.StatusOK
	}
	return b.body.Write(p)
}
func (b *bufferedResponse) WriteHeader(code int) {
	if b.code == 0 {
		b.code = code
	}
}

func copyResponse(w http.ResponseWriter, b *bufferedResponse) {
	for k, v := range b.header {
		w.Header()[k] = v
	}
	w.WriteHeader(b.code)
	_, _ = w.Write(b.body.Bytes())
}
