package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluice-media/sluice/cluster"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
)

func newStatusCmd(g *globals) *cobra.Command {
	var follow bool
	var fo followOptions
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show rooms, participants and tracks with live bitrates, or follow the live event stream",
		Long: `Show a snapshot of the daemon: every room, its participants and their tracks with codec,
resolution, bitrate, frame rate and subscriber count, and the daemon's other sections
(ingests, recordings, broadcasts) as they exist.

With -f, follow the event log instead: one line per event (seq, time, type, room, who, key
facts), or one JSON event per line with -o json. --since starts in the past (a seq: the events
after it; a duration: that long ago); without it, following starts with the next event. When the
daemon restarts, the stream reconnects by itself and resumes after the last event it printed:
nothing is lost or printed twice.`,
		Example: `  sluice status
  sluice status -o json | jq '.rooms[].room.name'
  sluice status -f
  sluice status -f --since 10m --type 'recording.*' --room lobby
  sluice status -f -o json | jq -c 'select(.type == "stream.failed")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if follow {
				return followStatus(cmd, g, fo)
			}
			if fo.since != "" || len(fo.types) > 0 || fo.room != "" {
				return fmt.Errorf("--since, --type and --room go with -f/--follow")
			}
			var raw json.RawMessage
			if err := g.client().do(cmd.Context(), "GET", "/v1/status", nil, &raw); err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			return renderStatus(cmd.OutOrStdout(), raw)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&follow, "follow", "f", false, "follow the live event stream")
	f.StringVar(&fo.since, "since", "", "with -f: start after this seq, or this long ago (10m)")
	f.StringSliceVar(&fo.types, "type", nil, "with -f: event type globs ('recording.*'), comma-separated or repeated")
	f.StringVar(&fo.room, "room", "", "with -f: only this room's events")
	return cmd
}

// followStatus prints the event stream until interrupted.
func followStatus(cmd *cobra.Command, g *globals, fo followOptions) error {
	out := cmd.OutOrStdout()
	warn := func(msg string) { fmt.Fprintln(cmd.ErrOrStderr(), "sluice:", msg) }
	return g.client().followEvents(cmd.Context(), fo, func(_ uint64, raw []byte) error {
		var err error
		if g.output == "json" {
			_, err = fmt.Fprintf(out, "%s\n", raw)
		} else {
			var ev sfu.Event
			if jerr := json.Unmarshal(raw, &ev); jerr != nil {
				return fmt.Errorf("reading an event: %w", jerr)
			}
			_, err = fmt.Fprintln(out, eventLine(&ev))
		}
		if err != nil {
			return fmt.Errorf("%w: %w", errOutput, err)
		}
		return nil
	}, warn)
}

func renderStatus(w io.Writer, raw json.RawMessage) error {
	var st api.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("reading status: %w", err)
	}
	mode := "auth keys"
	if st.OpenMode {
		mode = "open mode"
	}
	fmt.Fprintf(w, "sluice %s on %s, up %s, %s\n\n", st.Version, orDash(st.Node), time.Since(st.StartedAt).Round(time.Second), mode)
	if len(st.Rooms) == 0 {
		fmt.Fprintln(w, "no rooms")
	} else {
		t := newTable(w, "ROOM", "PARTICIPANT", "KIND", "TRACK", "CODEC", "SIZE", "BITRATE", "FPS", "SUBS", "STATE")
		for _, r := range st.Rooms {
			if len(r.Participants) == 0 {
				t.row(r.Room.Name, "-", "-", "-", "-", "-", "-", "-", "-", "empty")
			}
			for _, p := range r.Participants {
				if len(p.Tracks) == 0 {
					state := "subscribed to " + fmt.Sprint(p.Subscriptions)
					t.row(r.Room.Name, p.Participant.Identity, p.Participant.Kind, "-", "-", "-", "-", "-", "-", state)
				}
				for _, tr := range p.Tracks {
					t.row(r.Room.Name, p.Participant.Identity, p.Participant.Kind, tr.Kind, tr.Codec, size(tr),
						fmt.Sprintf("%.0f kbps", tr.BitrateKbps), fps(tr), fmt.Sprint(tr.Subscribers), trackState(tr))
				}
			}
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	return renderSections(w, raw)
}

// renderSections prints a count line for each section other packages add to /v1/status.
func renderSections(w io.Writer, raw json.RawMessage) error {
	var all map[string]json.RawMessage
	if err := json.Unmarshal(raw, &all); err != nil {
		return err
	}
	core := map[string]bool{"node": true, "version": true, "started_at": true, "open_mode": true, "rooms": true}
	var names []string
	for k := range all {
		if !core[k] {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		if k == "transcoders" {
			if err := renderTranscoders(w, all[k]); err != nil {
				return err
			}
			continue
		}
		if k == "nodes" {
			if err := renderNodes(w, all[k]); err != nil {
				return err
			}
			continue
		}
		var list []statusItem
		if json.Unmarshal(all[k], &list) != nil {
			continue
		}
		fmt.Fprintf(w, "\n%s: %d\n", k, len(list))
		if len(list) == 0 {
			continue
		}
		t := newTable(w, "ID", "ROOM", "WHO", "STATE", "DETAIL")
		for _, it := range list {
			t.row(it.ID, orDash(it.Room), orDash(it.who()), orDash(it.state()), orDash(it.detail()))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	return nil
}

// statusItem is what the status sections (ingests, recordings, broadcasts) have in common.
type statusItem struct {
	ID           string `json:"id"`
	Type         string `json:"type"`
	Room         string `json:"room"`
	Identity     string `json:"identity"`
	Participant  string `json:"participant"`
	State        string `json:"state"`
	Status       string `json:"status"`
	URL          string `json:"url"` // credentials and keys are never in it
	Destinations []struct {
		URL    string `json:"url"`
		Status string `json:"status"`
	} `json:"destinations"`
	Error *struct {
		Message string `json:"message"`
	} `json:"error"`
}

func (it statusItem) who() string {
	if it.Participant != "" {
		return it.Participant
	}
	return it.Identity
}

func (it statusItem) state() string {
	if it.Status != "" {
		return it.Status
	}
	return it.State
}

func (it statusItem) detail() string {
	var parts []string
	if it.Type != "" {
		parts = append(parts, it.Type)
	}
	if len(it.Destinations) > 0 {
		for _, d := range it.Destinations {
			parts = append(parts, d.URL+" "+d.Status)
		}
	} else if it.URL != "" {
		parts = append(parts, it.URL)
	}
	if it.Error != nil && it.Error.Message != "" {
		parts = append(parts, "error: "+it.Error.Message)
	}
	return strings.Join(parts, ", ")
}

func size(t sfu.TrackStatus) string {
	if t.Width == 0 {
		return "-"
	}
	return fmt.Sprintf("%dx%d", t.Width, t.Height)
}

func fps(t sfu.TrackStatus) string {
	if t.Kind != string(sfu.KindVideo) {
		return "-"
	}
	return fmt.Sprintf("%.1f", t.FPS)
}

func trackState(t sfu.TrackStatus) string {
	var s []string
	if t.Muted {
		s = append(s, "muted")
	}
	if t.Interrupted {
		s = append(s, "interrupted")
	}
	if t.PacketsDropped > 0 {
		s = append(s, fmt.Sprintf("%d dropped", t.PacketsDropped))
	}
	if len(s) == 0 {
		return "live"
	}
	return strings.Join(s, ", ")
}

// renderNodes prints the cluster's nodes with their load.
func renderNodes(w io.Writer, raw json.RawMessage) error {
	var nodes []cluster.Node
	if err := json.Unmarshal(raw, &nodes); err != nil {
		return fmt.Errorf("reading nodes: %w", err)
	}
	fmt.Fprintf(w, "\nnodes: %d\n", len(nodes))
	t := newTable(w, "NODE", "URL", "VERSION", "CPU", "SESSIONS", "EGRESS", "HEARTBEAT")
	for _, n := range nodes {
		t.row(n.ID, orDash(n.URL), orDash(n.Version), fmt.Sprintf("%.0f%%", 100*n.Load.CPU), fmt.Sprint(n.Load.Sessions),
			fmt.Sprint(n.Load.Egress), time.Since(n.Updated).Round(time.Second).String()+" ago")
	}
	return t.flush()
}
