package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-media/sluice/sfu"
)

// followOptions select the events `sluice status -f` follows.
type followOptions struct {
	since string   // SEQ or duration; "" starts with the next event
	types []string // globs
	room  string
	// idle is how long a connection may stay silent (heartbeats included) before it is dropped
	// and made again.
	idle time.Duration
	// connected, when set, is called each time the stream is (re)connected.
	connected func()
}

// followEvents streams the daemon's events to fn in seq order until ctx ends. It reconnects by
// itself when the connection drops (daemon restart), resuming after the last seq it passed on
// with Last-Event-ID, so that nothing is lost or repeated. warn reports connection trouble.
func (c *apiClient) followEvents(ctx context.Context, o followOptions, fn func(seq uint64, raw []byte) error, warn func(string)) error {
	if o.idle <= 0 {
		o.idle = 45 * time.Second
	}
	var last uint64
	resumed := false
	backoff := 250 * time.Millisecond
	down := false
	for {
		err := c.followOnce(ctx, o, last, resumed, func(seq uint64, raw []byte) error {
			if raw == nil { // the position the stream starts from
				if !resumed {
					last, resumed = seq, true
				}
				return nil
			}
			if resumed && seq <= last {
				return nil // never repeat
			}
			if err := fn(seq, raw); err != nil {
				return err
			}
			last, resumed = seq, true
			return nil
		}, func() {
			if down {
				warn("reconnected; resuming after seq " + strconv.FormatUint(last, 10))
			}
			if o.connected != nil {
				o.connected()
			}
			down, backoff = false, 250*time.Millisecond
		})
		if ctx.Err() != nil {
			return nil
		}
		var fatal *apiError
		if errors.As(err, &fatal) && fatal.Status/100 == 4 {
			return err // a bad filter or refused credentials: retrying will not help
		}
		if errors.Is(err, errOutput) {
			return err
		}
		if !down {
			warn(fmt.Sprintf("connection to the daemon lost (%v); reconnecting", err))
			down = true
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// errOutput wraps a failure to write what was received (a closed pipe): it ends the follow.
var errOutput = errors.New("writing output")

// followOnce makes one SSE connection and reads it until it ends.
func (c *apiClient) followOnce(ctx context.Context, o followOptions, last uint64, resumed bool, fn func(uint64, []byte) error, connected func()) error {
	q := url.Values{"follow": {"1"}}
	if !resumed && o.since != "" {
		q.Set("since", o.since)
	}
	if len(o.types) > 0 {
		q.Set("type", strings.Join(o.types, ","))
	}
	if o.room != "" {
		q.Set("room", o.room)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/events?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	if resumed {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(last, 10))
	}
	tok, err := c.token()
	if err != nil {
		return &apiError{Status: 400, Message: err.Error()}
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := (&http.Client{Transport: c.http.Transport}).Do(req)
	if err != nil {
		return unwrapURLError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var wrapper struct {
			Error *apiError `json:"error"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&wrapper)
		e := wrapper.Error
		if e == nil {
			e = &apiError{}
		}
		e.Status = resp.StatusCode
		return e
	}
	connected()
	// a silent connection (no event, no heartbeat) is a dead one
	watchdog := time.AfterFunc(o.idle, cancel)
	defer watchdog.Stop()
	if err := readSSE(resp.Body, func() { watchdog.Reset(o.idle) }, fn); err != nil {
		return err
	}
	return io.ErrUnexpectedEOF
}

// readSSE parses a Server-Sent Events stream (https://html.spec.whatwg.org/multipage/server-sent-events.html):
// for each event it calls fn with its id and data (nil data for an id-only event, which moves
// the resume position), and alive for every line read. It returns at the end of r or on fn's
// error.
func readSSE(r io.Reader, alive func(), fn func(id uint64, data []byte) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	var id uint64
	var data []byte
	hasID := false
	for sc.Scan() {
		alive()
		line := sc.Bytes()
		switch {
		case len(line) == 0:
			if data != nil || hasID {
				if err := fn(id, data); err != nil {
					return err
				}
			}
			id, data, hasID = 0, nil, false
		case bytes.HasPrefix(line, []byte("id: ")):
			id, _ = strconv.ParseUint(string(line[4:]), 10, 64)
			hasID = true
		case bytes.HasPrefix(line, []byte("data: ")):
			data = append([]byte(nil), line[6:]...)
		}
	}
	return sc.Err()
}

// eventLine renders an event as one readable line: seq, time, type, room, who, key facts.
func eventLine(ev *sfu.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "#%-6d %s  %-26s %-14s", ev.Seq, ev.Time.Local().Format("15:04:05.000"), ev.Type, orDash(ev.RoomName()))
	facts := eventFacts(ev)
	if len(facts) > 0 {
		b.WriteString(" ")
		b.WriteString(strings.Join(facts, " "))
	}
	return strings.TrimRight(b.String(), " ")
}

func eventFacts(ev *sfu.Event) []string {
	var f []string
	add := func(k, v string) {
		if v != "" {
			f = append(f, k+"="+v)
		}
	}
	if p := ev.Participant; p != nil {
		add("who", p.Identity)
		if ev.Track == nil && ev.Stream == nil {
			add("kind", p.Kind)
			add("addr", p.RemoteAddr)
		}
	}
	if t := ev.Track; t != nil {
		add("track", t.Kind+"/"+t.Codec)
		if t.Width > 0 {
			add("size", fmt.Sprintf("%dx%d", t.Width, t.Height))
		}
	}
	if s := ev.Stream; s != nil {
		add("stream", s.Protocol+"/"+s.Direction)
		if s.BitrateKbps != nil {
			add("kbps", strconv.FormatFloat(*s.BitrateKbps, 'f', 0, 64))
		}
		if s.FPS != nil && *s.FPS > 0 {
			add("fps", strconv.FormatFloat(*s.FPS, 'f', 1, 64))
		}
		if s.PacketsLost != nil && *s.PacketsLost > 0 {
			add("lost", strconv.FormatInt(*s.PacketsLost, 10))
		}
	}
	if r := ev.Recording; r != nil {
		add("recording", r.ID)
		add("status", r.Status)
		if len(r.Files) > 0 {
			add("files", strconv.Itoa(len(r.Files)))
		}
		if r.DurationMs > 0 {
			add("duration", (time.Duration(r.DurationMs) * time.Millisecond).String())
		}
		if r.SizeBytes > 0 {
			add("bytes", strconv.FormatInt(r.SizeBytes, 10))
		}
	}
	if bc := ev.Broadcast; bc != nil {
		add("broadcast", bc.ID)
		add("status", bc.Status)
		add("url", bc.URL)
		if bc.Reconnects > 0 {
			add("reconnects", strconv.Itoa(bc.Reconnects))
		}
	}
	if in := ev.Ingest; in != nil {
		add("ingest", in.ID)
		add("type", in.Type)
		add("state", in.State)
		add("from", ev.PrevState)
	}
	if ev.Room != nil && (ev.Type == sfu.EventRoomStarted || ev.Type == sfu.EventRoomFinished) {
		add("participants", strconv.Itoa(ev.Room.Participants))
	}
	if ev.Uplink != nil {
		add("uplink", strconv.Itoa(*ev.Uplink))
	}
	if ev.Downlink != nil {
		add("downlink", strconv.Itoa(*ev.Downlink))
	}
	for i, s := range ev.Speakers {
		if i == 3 {
			f = append(f, "…")
			break
		}
		add("speaker", fmt.Sprintf("%s:%d", s.Identity, s.Level))
	}
	add("protocol", ev.Protocol)
	add("addr", ev.RemoteAddr)
	add("version", ev.Version+ev.Node.Version)
	add("node", ev.Node.ID)
	add("node_address", ev.Node.Address)
	add("reason", ev.Reason)
	if ev.Error != nil {
		add("error", strconv.Quote(ev.Error.Code+": "+ev.Error.Message))
	}
	return f
}
