package main

import (
	"fmt"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/sluice-media/sluice/sfu"
)

func newRoomsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rooms",
		Short: "List, inspect, close rooms and remove participants",
		Example: `  sluice rooms list
  sluice rooms show lobby
  sluice rooms kick lobby alice
  sluice rooms close lobby`,
	}
	cmd.AddCommand(
		&cobra.Command{
			Use:     "list",
			Short:   "List open rooms",
			Example: "  sluice rooms list -o json",
			Args:    cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				var out struct {
					Rooms []sfu.RoomInfo `json:"rooms"`
				}
				if err := g.client().do(cmd.Context(), "GET", "/v1/rooms", nil, &out); err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(cmd.OutOrStdout(), out)
				}
				if len(out.Rooms) == 0 {
					fmt.Fprintln(cmd.OutOrStdout(), "no rooms")
					return nil
				}
				t := newTable(cmd.OutOrStdout(), "ROOM", "SID", "PARTICIPANTS", "AGE")
				for _, r := range out.Rooms {
					t.row(r.Name, r.SID, fmt.Sprint(r.Participants), ago(r.CreatedAt))
				}
				return t.flush()
			},
		},
		&cobra.Command{
			Use:     "show ROOM",
			Short:   "Show a room's participants and tracks",
			Example: "  sluice rooms show lobby",
			Args:    cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				var st sfu.RoomStatus
				if err := g.client().do(cmd.Context(), "GET", "/v1/rooms/"+url.PathEscape(args[0]), nil, &st); err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(cmd.OutOrStdout(), st)
				}
				w := cmd.OutOrStdout()
				fmt.Fprintf(w, "room %s (%s), %d participants, created %s ago\n\n", st.Room.Name, st.Room.SID, st.Room.Participants, ago(st.Room.CreatedAt))
				t := newTable(w, "PARTICIPANT", "KIND", "REMOTE", "TRACK", "CODEC", "SIZE", "BITRATE", "SUBS")
				for _, p := range st.Participants {
					if len(p.Tracks) == 0 {
						t.row(p.Participant.Identity, p.Participant.Kind, orDash(p.Participant.RemoteAddr), "-", "-", "-", "-", "-")
					}
					for _, tr := range p.Tracks {
						t.row(p.Participant.Identity, p.Participant.Kind, orDash(p.Participant.RemoteAddr), tr.Kind, tr.Codec, size(tr),
							fmt.Sprintf("%.0f kbps", tr.BitrateKbps), fmt.Sprint(tr.Subscribers))
					}
				}
				return t.flush()
			},
		},
		&cobra.Command{
			Use:     "close ROOM",
			Short:   "Close a room: every participant leaves (reason room_deleted)",
			Example: "  sluice rooms close lobby",
			Args:    cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := g.client().do(cmd.Context(), "DELETE", "/v1/rooms/"+url.PathEscape(args[0]), nil, nil); err != nil {
					return err
				}
				return done(g, cmd, "closed room "+args[0])
			},
		},
		&cobra.Command{
			Use:     "kick ROOM IDENTITY",
			Short:   "Remove a participant from a room (reason removed)",
			Example: "  sluice rooms kick lobby alice",
			Args:    cobra.ExactArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				path := "/v1/rooms/" + url.PathEscape(args[0]) + "/participants/" + url.PathEscape(args[1])
				if err := g.client().do(cmd.Context(), "DELETE", path, nil, nil); err != nil {
					return err
				}
				return done(g, cmd, "removed "+args[1]+" from "+args[0])
			},
		},
	)
	return cmd
}

// done prints the outcome of a command without a body.
func done(g *globals, cmd *cobra.Command, msg string) error {
	if g.output == "json" {
		return printJSON(cmd.OutOrStdout(), map[string]string{"result": msg})
	}
	fmt.Fprintln(cmd.OutOrStdout(), msg)
	return nil
}
