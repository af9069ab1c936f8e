package main

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
)

func newRoomsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rooms",
		Short: "List, inspect, update, close rooms; update, mute and remove participants; send data",
		Example: `  sluice rooms list
  sluice rooms show lobby
  sluice rooms update lobby --metadata '{"topic":"demo"}'
  sluice rooms mute lobby alice TR_xxxx
  sluice rooms send lobby --data 'hello' --topic chat
  sluice rooms kick lobby alice
  sluice rooms close lobby`,
	}
	cmd.AddCommand(newRoomsLayoutCmd(g))
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
		roomsUpdateCmd(g),
		roomsMuteCmd(g),
		roomsSendCmd(g),
	)
	return cmd
}

// roomsUpdateCmd changes a room's metadata, or a participant's name and metadata.
func roomsUpdateCmd(g *globals) *cobra.Command {
	var name, metadata string
	cmd := &cobra.Command{
		Use:   "update ROOM [IDENTITY] [--metadata M] [--name N]",
		Short: "Change a room's metadata (room.updated) or a participant's name and metadata (participant.updated)",
		Long: `With ROOM alone, set the room's metadata. With ROOM IDENTITY, set the participant's display
name and/or metadata. Only the flags given change; an unchanged value emits no event.`,
		Example: `  sluice rooms update lobby --metadata '{"topic":"demo"}'
  sluice rooms update lobby alice --name "Alice B." --metadata '{"role":"host"}'`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			body := map[string]string{}
			if cmd.Flags().Changed("metadata") {
				body["metadata"] = metadata
			}
			path := "/v1/rooms/" + url.PathEscape(args[0])
			if len(args) == 2 {
				path += "/participants/" + url.PathEscape(args[1])
				if cmd.Flags().Changed("name") {
					body["name"] = name
				}
			} else if cmd.Flags().Changed("name") {
				return fmt.Errorf("--name needs a participant: sluice rooms update ROOM IDENTITY --name N")
			}
			if len(body) == 0 {
				return fmt.Errorf("nothing to change: give --metadata and/or --name")
			}
			var out map[string]any
			if err := g.client().do(cmd.Context(), "PATCH", path, body, &out); err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "updated %s\n", strings.Join(args, "/"))
			return nil
		},
	}
	cmd.Flags().StringVar(&metadata, "metadata", "", "new metadata (free text, usually JSON; at most 64 KiB)")
	cmd.Flags().StringVar(&name, "name", "", "new display name of the participant")
	return cmd
}

// roomsMuteCmd mutes or unmutes a published track.
func roomsMuteCmd(g *globals) *cobra.Command {
	var unmute bool
	cmd := &cobra.Command{
		Use:   "mute ROOM IDENTITY TRACK_SID [--unmute]",
		Short: "Mark a participant's published track muted (track.muted) or unmuted (track.unmuted)",
		Example: `  sluice rooms mute lobby alice TR_xxxx
  sluice rooms mute lobby alice TR_xxxx --unmute`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/v1/rooms/" + url.PathEscape(args[0]) + "/participants/" + url.PathEscape(args[1]) +
				"/tracks/" + url.PathEscape(args[2]) + "/mute"
			var out sfu.TrackInfo
			if err := g.client().do(cmd.Context(), "POST", path, map[string]bool{"muted": !unmute}, &out); err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), out)
			}
			state := "muted"
			if !out.Muted {
				state = "unmuted"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s of %s in %s\n", state, args[2], args[1], args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&unmute, "unmute", false, "unmute instead")
	return cmd
}

// roomsSendCmd sends a data packet to a room's LiveKit participants.
func roomsSendCmd(g *globals) *cobra.Command {
	var data, topic string
	var lossy bool
	cmd := &cobra.Command{
		Use:   "send ROOM [IDENTITY...] --data TEXT [--topic T] [--lossy]",
		Short: "Send a data packet to a room's LiveKit participants (all, or those named)",
		Long: `The packet reaches LiveKit client SDKs as DataReceived from no participant (the server),
on the reliable channel unless --lossy. At most 15 KiB.`,
		Example: `  sluice rooms send lobby --data '{"slide":4}' --topic slides
  sluice rooms send lobby alice bob --data 'you are live'`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if data == "" {
				return fmt.Errorf("nothing to send: give --data")
			}
			body := api.SendDataRequest{Data: data, Topic: topic, DestinationIdentities: args[1:], Lossy: lossy}
			var out api.SendDataResponse
			if err := g.client().do(cmd.Context(), "POST", "/v1/rooms/"+url.PathEscape(args[0])+"/data", body, &out); err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "sent to %d participants of %s\n", out.Delivered, args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "the payload (text)")
	cmd.Flags().StringVar(&topic, "topic", "", "the packet's topic")
	cmd.Flags().BoolVar(&lossy, "lossy", false, "send on the lossy channel")
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
