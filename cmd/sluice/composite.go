package main

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sluice-media/sluice/egress/composite"
)

// newRoomsLayoutCmd shows or changes the layout of a room's composite (the program of its
// broadcasts and recordings with a layout).
func newRoomsLayoutCmd(g *globals) *cobra.Command {
	var req composite.UpdateRequest
	cmd := &cobra.Command{
		Use:   "layout ROOM [--layout grid|speaker|single] [--participant P]",
		Short: "Show or switch the layout of a room's composite (whole-room broadcasts and recordings)",
		Example: `  sluice rooms layout studio
  sluice rooms layout studio --layout single --participant guest
  sluice rooms layout studio --layout speaker`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/v1/rooms/" + url.PathEscape(args[0]) + "/composite"
			var info composite.Info
			var err error
			if cmd.Flags().Changed("layout") || cmd.Flags().Changed("participant") {
				err = g.client().do(cmd.Context(), "PATCH", path, req, &info)
			} else {
				err = g.client().do(cmd.Context(), "GET", path, nil, &info)
			}
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), info)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "layout %s", info.Layout)
			if info.Focus != "" {
				fmt.Fprintf(cmd.OutOrStdout(), " (on %s)", info.Focus)
			}
			fmt.Fprintf(cmd.OutOrStdout(), ": %s", strings.Join(info.Participants, ", "))
			if info.Speaker != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "; speaking: %s", info.Speaker)
			}
			fmt.Fprintln(cmd.OutOrStdout())
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Layout, "layout", "", "grid, speaker or single")
	cmd.Flags().StringVar(&req.Participant, "participant", "", "the participant single shows (speaker: pinned large); \"\" lets the composite choose")
	return cmd
}
