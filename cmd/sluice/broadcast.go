package main

import (
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sluice-media/sluice/egress/broadcast"
	"github.com/sluice-media/sluice/egress/composite"
	"github.com/sluice-media/sluice/sfu"
)

func newBroadcastCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "broadcast",
		Short: "Push a room's stream to YouTube, Twitch or any RTMP/RTMPS ingest",
		Long: `Broadcast a room to RTMP platforms. A broadcast follows one participant (--participant, or by
default the room's first publisher with video), sends H.264 and AAC (Opus and VP8/VP9 are converted
with ffmpeg), reconnects after drops, and fails at once when a platform refuses the stream key.
Stream keys are never shown: URLs print as rtmp://host/app/***.`,
		Example: `  sluice broadcast start --room studio --url rtmps://a.rtmps.youtube.com/live2/KEY
  sluice broadcast start --room studio --url rtmp://live.twitch.tv/app/KEY --url rtmps://a.rtmps.youtube.com/live2/KEY2 --participant host
  sluice broadcast list
  sluice broadcast update BC_4f9Kc2 --add-url rtmp://live.twitch.tv/app/KEY --remove-url DST_8d1Lq0
  sluice broadcast stop BC_4f9Kc2`,
	}
	var req broadcast.StartRequest
	start := &cobra.Command{
		Use:   "start --room R --url rtmp(s)://HOST/APP/KEY [--url ...] [--participant P]",
		Short: "Start broadcasting a room to one or more RTMP/RTMPS URLs",
		Example: `  sluice broadcast start --room studio --url rtmps://a.rtmps.youtube.com/live2/xxxx-xxxx-xxxx-xxxx
  sluice broadcast start --room studio --participant host --url rtmp://live.twitch.tv/app/live_123_abc -o json
  sluice broadcast start --room studio --layout grid --url rtmps://a.rtmps.youtube.com/live2/xxxx-xxxx-xxxx-xxxx
  sluice broadcast start --room studio --layout speaker --size 1920x1080 --fps 30 --video-bitrate 6000 --labels --url rtmp://live.twitch.tv/app/KEY`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var info sfu.BroadcastInfo
			if err := g.client().do(cmd.Context(), "POST", "/v1/broadcasts", req, &info); err != nil {
				return err
			}
			return printBroadcastOut(g, cmd, &info)
		},
	}
	f := start.Flags()
	f.StringVar(&req.Room, "room", "", "room to broadcast (required)")
	f.StringArrayVar(&req.URLs, "url", nil, "destination rtmp:// or rtmps:// URL with its stream key (repeatable, required)")
	f.StringVar(&req.Participant, "participant", "", "identity of the source participant (default: the room's first publisher with video; with --layout single, the one shown)")
	compositeFlags(f, &req.Options)
	_ = start.MarkFlagRequired("room")
	_ = start.MarkFlagRequired("url")

	list := &cobra.Command{
		Use:     "list",
		Short:   "List broadcasts (stream keys are not shown)",
		Example: "  sluice broadcast list\n  sluice broadcast list -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out struct {
				Broadcasts []*sfu.BroadcastInfo `json:"broadcasts"`
			}
			if err := g.client().do(cmd.Context(), "GET", "/v1/broadcasts", nil, &out); err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), out)
			}
			if len(out.Broadcasts) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no broadcasts")
				return nil
			}
			t := newTable(cmd.OutOrStdout(), "ID", "ROOM", "SOURCE", "STATUS", "DESTINATIONS", "SENT", "RECONNECTS", "STARTED")
			for _, b := range out.Broadcasts {
				started := "-"
				if b.StartedAt != nil {
					started = ago(*b.StartedAt) + " ago"
				}
				t.row(b.ID, b.Room, orDash(b.Participant), b.Status, destSummary(b), bytesHuman(b.BytesSent), fmt.Sprint(b.Reconnects), started)
			}
			return t.flush()
		},
	}
	show := &cobra.Command{
		Use:     "show ID",
		Short:   "Show a broadcast and the state of each destination",
		Example: "  sluice broadcast show BC_4f9Kc2",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var info sfu.BroadcastInfo
			if err := g.client().do(cmd.Context(), "GET", "/v1/broadcasts/"+url.PathEscape(args[0]), nil, &info); err != nil {
				return err
			}
			return printBroadcastOut(g, cmd, &info)
		},
	}
	stop := &cobra.Command{
		Use:     "stop ID",
		Short:   "Stop a broadcast (the platforms get a clean end of stream)",
		Example: "  sluice broadcast stop BC_4f9Kc2",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var info sfu.BroadcastInfo
			if err := g.client().do(cmd.Context(), "POST", "/v1/broadcasts/"+url.PathEscape(args[0])+"/stop", nil, &info); err != nil {
				return err
			}
			return printBroadcastOut(g, cmd, &info)
		},
	}
	var upd broadcast.UpdateRequest
	update := &cobra.Command{
		Use:   "update ID [--add-url U]... [--remove-url U|DESTINATION_ID]...",
		Short: "Add or remove destinations of a running broadcast; the others are not interrupted",
		Example: `  sluice broadcast update BC_4f9Kc2 --add-url rtmp://live.twitch.tv/app/KEY
  sluice broadcast update BC_4f9Kc2 --remove-url DST_8d1Lq0`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(upd.AddURLs) == 0 && len(upd.RemoveURLs) == 0 {
				return fmt.Errorf("give --add-url or --remove-url")
			}
			var info sfu.BroadcastInfo
			if err := g.client().do(cmd.Context(), "PATCH", "/v1/broadcasts/"+url.PathEscape(args[0]), upd, &info); err != nil {
				return err
			}
			return printBroadcastOut(g, cmd, &info)
		},
	}
	update.Flags().StringArrayVar(&upd.AddURLs, "add-url", nil, "destination URL to add (repeatable)")
	update.Flags().StringArrayVar(&upd.RemoveURLs, "remove-url", nil, "destination to remove: its full URL or its id (repeatable)")
	cmd.AddCommand(start, list, show, stop, update)
	return cmd
}

func printBroadcastOut(g *globals, cmd *cobra.Command, info *sfu.BroadcastInfo) error {
	if g.output == "json" {
		return printJSON(cmd.OutOrStdout(), info)
	}
	printBroadcast(cmd.OutOrStdout(), info)
	return nil
}

func printBroadcast(w io.Writer, b *sfu.BroadcastInfo) {
	fmt.Fprintf(w, "broadcast %s of room %s", b.ID, b.Room)
	if b.Participant != "" {
		fmt.Fprintf(w, " (source %s)", b.Participant)
	}
	fmt.Fprintf(w, "\nstatus: %s", b.Status)
	if b.Error != nil {
		fmt.Fprintf(w, " (%s: %s)", b.Error.Code, b.Error.Message)
	}
	fmt.Fprintln(w)
	if b.StartedAt != nil {
		fmt.Fprintf(w, "started: %s", b.StartedAt.Local().Format(time.DateTime))
		if b.EndedAt != nil {
			fmt.Fprintf(w, ", ended: %s", b.EndedAt.Local().Format(time.DateTime))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "sent: %s, reconnects: %d\n\n", bytesHuman(b.BytesSent), b.Reconnects)
	t := newTable(w, "DESTINATION", "URL", "STATUS", "SENT", "RECONNECTS", "ERROR")
	for _, d := range b.Destinations {
		msg := "-"
		if d.Error != nil {
			msg = d.Error.Message
		}
		t.row(d.ID, d.URL, d.Status, bytesHuman(d.BytesSent), fmt.Sprint(d.Reconnects), msg)
	}
	_ = t.flush()
}

func destSummary(b *sfu.BroadcastInfo) string {
	active := 0
	for _, d := range b.Destinations {
		if d.Status == "active" {
			active++
		}
	}
	return fmt.Sprintf("%d/%d active", active, len(b.Destinations))
}

func bytesHuman(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// compositeFlags adds the flags of a whole-room broadcast or recording to f.
func compositeFlags(f *pflag.FlagSet, o *composite.Options) {
	f.StringVar(&o.Layout, "layout", "", "compose the whole room: grid, speaker or single (one stream, one file)")
	f.Var(sizeFlag{o}, "size", "with --layout: picture size WIDTHxHEIGHT (default 1280x720)")
	f.IntVar(&o.FPS, "fps", 0, "with --layout: frame rate (default 30)")
	f.IntVar(&o.VideoBitrateKbps, "video-bitrate", 0, "with --layout: video bitrate in kbit/s (default 3000)")
	f.StringVar(&o.KeyframeInterval, "keyframe-interval", "", "with --layout: keyframe interval, e.g. 2s (default 2s)")
	f.BoolVar(&o.Labels, "labels", false, "with --layout: draw each participant's name on their tile")
}

// sizeFlag parses WIDTHxHEIGHT into a composite's options.
type sizeFlag struct{ o *composite.Options }

func (s sizeFlag) String() string {
	if s.o == nil || s.o.Width == 0 {
		return ""
	}
	return fmt.Sprintf("%dx%d", s.o.Width, s.o.Height)
}

func (s sizeFlag) Set(v string) error {
	w, h, ok := strings.Cut(v, "x")
	wi, err1 := strconv.Atoi(w)
	hi, err2 := strconv.Atoi(h)
	if !ok || err1 != nil || err2 != nil || wi <= 0 || hi <= 0 {
		return fmt.Errorf("%q is not WIDTHxHEIGHT", v)
	}
	s.o.Width, s.o.Height = wi, hi
	return nil
}

func (sizeFlag) Type() string { return "WxH" }
