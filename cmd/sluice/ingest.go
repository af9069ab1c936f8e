package main

import (
	"fmt"
	"io"
	"net/url"
	"sort"

	"github.com/spf13/cobra"

	"github.com/sluice-media/sluice/ingest"
)

func newIngestCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ingest",
		Short: "Create and manage ingests: RTMP and SRT stream keys and RTSP camera pulls",
		Example: `  sluice ingest create rtmp --room studio
  sluice ingest create srt --room studio --passphrase 'a long passphrase'
  sluice ingest create rtsp --room door --url rtsp://user:pass@10.0.0.20/stream1
  sluice ingest list
  sluice ingest delete IN_4f9Kc2`,
	}
	var d ingest.Definition
	create := &cobra.Command{
		Use:   "create rtmp|srt|rtsp",
		Short: "Create a reusable RTMP or SRT stream key, or add an RTSP camera to pull",
		Long: `Create an ingest.

  rtmp   a reusable stream key for OBS or an encoder; prints the Server and Stream Key to type in.
  srt    the same over SRT (MPEG-TS on UDP); prints the URL to type in, with the passphrase (AES)
         when --passphrase is given.
  rtsp   a camera the daemon pulls (and reconnects to for as long as it exists), given by --url.`,
		Example: `  sluice ingest create rtmp --room studio --identity obs
  sluice ingest create rtmp --room studio --override      # a new publisher takes over a live key
  sluice ingest create srt --room studio --passphrase 'ten or more characters'
  sluice ingest create rtsp --room door --url rtsp://admin:secret@10.0.0.20:554/stream1 --transport tcp`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"rtmp", "srt", "rtsp"},
		RunE: func(cmd *cobra.Command, args []string) error {
			switch args[0] {
			case "rtmp":
				d.Type = ingest.TypeRTMP
			case "srt":
				d.Type = ingest.TypeSRT
			case "rtsp":
				d.Type = ingest.TypeRTSPPull
				if d.URL == "" {
					return fmt.Errorf("an rtsp ingest needs --url rtsp://[user:pass@]camera[:port]/path")
				}
			default:
				return fmt.Errorf("ingest type must be rtmp, srt or rtsp, not %q", args[0])
			}
			var v ingest.View
			if err := g.client().do(cmd.Context(), "POST", "/v1/ingests", d, &v); err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), v)
			}
			printIngest(cmd.OutOrStdout(), v)
			return nil
		},
	}
	f := create.Flags()
	f.StringVar(&d.Room, "room", "", "room the stream goes to (required)")
	f.StringVar(&d.Identity, "identity", "", "participant identity of the stream in the room")
	f.StringVar(&d.URL, "url", "", "camera URL (rtsp ingests)")
	f.StringVar(&d.Transport, "transport", "", "rtsp transport: auto (UDP, then TCP), udp or tcp")
	f.BoolVar(&d.Override, "override", false, "rtmp, srt: a second publisher on the key takes over instead of being refused")
	f.StringVar(&d.Passphrase, "passphrase", "", "srt: the publisher must encrypt (AES) with this passphrase (10 to 79 characters)")
	f.StringVar(&d.ID, "id", "", "ingest id (generated when empty)")
	_ = create.MarkFlagRequired("room")

	list := &cobra.Command{
		Use:     "list",
		Short:   "List ingests (stream keys and passwords are not shown)",
		Example: "  sluice ingest list -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out struct {
				Ingests []ingest.Ingest `json:"ingests"`
			}
			if err := g.client().do(cmd.Context(), "GET", "/v1/ingests", nil, &out); err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), out)
			}
			if len(out.Ingests) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no ingests")
				return nil
			}
			sort.Slice(out.Ingests, func(i, j int) bool { return out.Ingests[i].ID < out.Ingests[j].ID })
			t := newTable(cmd.OutOrStdout(), "ID", "TYPE", "ROOM", "IDENTITY", "STATE", "RETRIES", "SOURCE", "ERROR")
			for _, ing := range out.Ingests {
				src := orDash(ing.URL)
				if ing.FromConfig {
					src += " (config)"
				}
				t.row(ing.ID, ing.Type, ing.Room, orDash(ing.Identity), ing.State, fmt.Sprint(ing.Retries), src, orDash(ing.Error))
			}
			return t.flush()
		},
	}
	show := &cobra.Command{
		Use:     "show ID",
		Short:   "Show an ingest with its publish settings (including its stream key)",
		Example: "  sluice ingest show IN_4f9Kc2",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var v ingest.View
			if err := g.client().do(cmd.Context(), "GET", "/v1/ingests/"+url.PathEscape(args[0]), nil, &v); err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), v)
			}
			printIngest(cmd.OutOrStdout(), v)
			return nil
		},
	}
	del := &cobra.Command{
		Use:     "delete ID",
		Short:   "Delete an ingest; a live session on it ends",
		Example: "  sluice ingest delete IN_4f9Kc2",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.client().do(cmd.Context(), "DELETE", "/v1/ingests/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			return done(g, cmd, "deleted ingest "+args[0])
		},
	}
	cmd.AddCommand(create, list, show, del)
	return cmd
}

func printIngest(w io.Writer, v ingest.View) {
	fmt.Fprintf(w, "ingest %s (%s) -> room %s", v.ID, v.Type, v.Room)
	if v.Identity != "" {
		fmt.Fprintf(w, " as %s", v.Identity)
	}
	fmt.Fprintf(w, "\nstate: %s", v.State)
	if v.Error != "" {
		fmt.Fprintf(w, " (%s)", v.Error)
	}
	fmt.Fprintln(w)
	if v.URL != "" {
		fmt.Fprintf(w, "camera: %s (transport %s)\n", v.URL, v.Transport)
	}
	if s, ok := v.Publish["rtmp_server"]; ok {
		fmt.Fprintf(w, "\nIn OBS (Settings > Stream, Service: Custom):\n  Server:     %s\n  Stream Key: %s\n", s, v.Publish["stream_key"])
	}
	if u, ok := v.Publish["srt_url"]; ok {
		fmt.Fprintf(w, "\nIn OBS (Settings > Stream, Service: Custom):\n  Server:     %s\n  Stream Key: (leave empty)\n", u)
		fmt.Fprintf(w, "\nOr with ffmpeg: ffmpeg ... -f mpegts '%s'\n", u)
	}
	if u, ok := v.Publish["rtsp_url"]; ok {
		fmt.Fprintf(w, "\nPublish with RTSP to:\n  %s\n", u)
	}
}
