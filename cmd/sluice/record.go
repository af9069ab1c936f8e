package main

import (
	"fmt"
	"io"
	"net/url"
	"path"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluice-media/sluice/recorder"
)

func newRecordCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "record",
		Short: "Start, stop, pause and list recordings",
		Long: `Record a room (one file per participant), one participant (its audio and video in one file)
or one of its tracks, as fragmented MP4 (mkv when the codec needs it: VP8). Files roll into
segments, are playable even after a crash, and are listed in each recording's manifest under
the recordings directory (<data_dir>/recordings/<room>/<id>/recording.json).`,
		Example: `  sluice record start --room lobby
  sluice record start --room studio --participant obs --segment 30m --max-duration 4h
  sluice record pause RC_4f9Kc0aB12cD34eF
  sluice record list --room lobby
  sluice record stop RC_4f9Kc0aB12cD34eF
  sluice record start --room cam-1 --storage s3     # upload to storage target s3 once it ends
  sluice record delete RC_4f9Kc0aB12cD34eF
  ffplay http://localhost:8800/v1/recordings/RC_4f9Kc0aB12cD34eF/index.m3u8`,
	}
	cmd.AddCommand(newRecordStartCmd(g), newRecordStopCmd(g), newRecordPauseCmd(g, "pause"), newRecordPauseCmd(g, "resume"),
		newRecordListCmd(g), newRecordShowCmd(g), newRecordDeleteCmd(g))
	return cmd
}

func newRecordStartCmd(g *globals) *cobra.Command {
	var req recorder.StartRequest
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Start recording a room, a participant or a track",
		Long: `Start a recording. The room must be open (and the participant in it, when given). Recording
starts at the next keyframe; when the source leaves, the recording waits recording.grace
(default 30s) for it to come back, continuing in a new segment.`,
		Example: `  sluice record start --room lobby
  sluice record start --room studio --participant obs --format mkv
  sluice record start --room cam-1 --participant cam --track video --segment 1h
  sluice record start --room studio --layout grid
  sluice record start --room studio --layout single --participant host --size 1920x1080
  sluice record start --room cam-1 --storage s3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var rec recorder.Recording
			if err := g.client().do(cmd.Context(), "POST", "/v1/recordings", req, &rec); err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), rec)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "recording %s started (room %s%s)\n", rec.ID, rec.Room, scope(&rec))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Room, "room", "", "room to record (required)")
	f.StringVar(&req.Participant, "participant", "", "record only this participant's identity")
	f.StringVar(&req.Track, "track", "", "record only this track: audio, video or a track id")
	f.StringVar(&req.Format, "format", "", "mp4 or mkv (default: recording.format)")
	f.StringVar(&req.Segment, "segment", "", "roll into a new file after this long, e.g. 30m (default: recording.segment_duration)")
	f.StringVar(&req.MaxDuration, "max-duration", "", "stop after this long, e.g. 2h")
	compositeFlags(f, &req.Options)
	f.StringVar(&req.Storage, "storage", "", "upload to this storage target once ended, or local (default: recording.storage)")
	_ = cmd.MarkFlagRequired("room")
	return cmd
}

func scope(r *recorder.Recording) string {
	s := ""
	if r.Participant != "" {
		s += ", participant " + r.Participant
	}
	if r.Track != "" {
		s += ", track " + r.Track
	}
	return s
}

func newRecordStopCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "stop ID",
		Short:   "Stop a recording and wait until its files are closed",
		Example: "  sluice record stop RC_4f9Kc0aB12cD34eF",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var rec recorder.Recording
			if err := g.client().do(cmd.Context(), "POST", "/v1/recordings/"+url.PathEscape(args[0])+"/stop", nil, &rec); err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), rec)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "recording %s %s: %d files, %s, %s\n", rec.ID, rec.Status, len(rec.Files), msDuration(rec.DurationMs), bytesSize(rec.SizeBytes))
			if rec.Error != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "error: %s (%s)\n", rec.Error.Message, rec.Error.Code)
			}
			return nil
		},
	}
}

func newRecordPauseCmd(g *globals, verb string) *cobra.Command {
	short := "Pause a recording: nothing is written until resume (the recording stays one)"
	if verb == "resume" {
		short = "Resume a paused recording in a new segment"
	}
	return &cobra.Command{
		Use:     verb + " ID",
		Short:   short,
		Example: "  sluice record " + verb + " RC_4f9Kc0aB12cD34eF",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var rec recorder.Recording
			if err := g.client().do(cmd.Context(), "POST", "/v1/recordings/"+url.PathEscape(args[0])+"/"+verb, nil, &rec); err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), rec)
			}
			state := "recording"
			if rec.Paused {
				state = "paused"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "recording %s %s\n", rec.ID, state)
			return nil
		},
	}
}

func newRecordListCmd(g *globals) *cobra.Command {
	var room, status string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List recordings, newest first",
		Example: `  sluice record list
  sluice record list --room lobby --status active -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if room != "" {
				q.Set("room", room)
			}
			if status != "" {
				q.Set("status", status)
			}
			var out struct {
				Recordings []recorder.Recording `json:"recordings"`
			}
			p := "/v1/recordings"
			if len(q) > 0 {
				p += "?" + q.Encode()
			}
			if err := g.client().do(cmd.Context(), "GET", p, nil, &out); err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), out)
			}
			if len(out.Recordings) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no recordings")
				return nil
			}
			t := newTable(cmd.OutOrStdout(), "ID", "ROOM", "PARTICIPANT", "STATUS", "DURATION", "SIZE", "FILES", "STARTED")
			for _, r := range out.Recordings {
				t.row(r.ID, r.Room, orDash(r.Participant), statusText(&r), msDuration(r.DurationMs), bytesSize(r.SizeBytes), fmt.Sprint(len(r.Files)), started(&r))
			}
			return t.flush()
		},
	}
	cmd.Flags().StringVar(&room, "room", "", "only this room's recordings")
	cmd.Flags().StringVar(&status, "status", "", "only recordings in this status: starting, active, complete, failed")
	return cmd
}

func newRecordDeleteCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "delete ID",
		Short: "Delete an ended recording's local files (an uploaded one stays in storage)",
		Long: `Delete the local files of a recording that has ended (stop it first). A recording that was
uploaded to object storage keeps its objects and its manifest: it stays listed, and its HLS
playlist and files are then served from storage. Any other recording is gone for good. Either
way a recording.deleted event (reason requested) is emitted.`,
		Example: "  sluice record delete RC_4f9Kc0aB12cD34eF",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var rec recorder.Recording
			if err := g.client().do(cmd.Context(), "DELETE", "/v1/recordings/"+url.PathEscape(args[0]), nil, &rec); err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), rec)
			}
			where := "deleted"
			if rec.Upload != nil && rec.Upload.Status == recorder.UploadComplete {
				where = "deleted locally, kept in storage target " + rec.Upload.Target
			}
			fmt.Fprintf(cmd.OutOrStdout(), "recording %s %s\n", rec.ID, where)
			return nil
		},
	}
}

func newRecordShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "show ID",
		Short:   "Show a recording with its files, pauses and error",
		Example: "  sluice record show RC_4f9Kc0aB12cD34eF",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var rec recorder.Recording
			if err := g.client().do(cmd.Context(), "GET", "/v1/recordings/"+url.PathEscape(args[0]), nil, &rec); err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), rec)
			}
			return renderRecording(cmd.OutOrStdout(), g, &rec)
		},
	}
}

func renderRecording(w io.Writer, g *globals, r *recorder.Recording) error {
	fmt.Fprintf(w, "recording %s: %s\n", r.ID, statusText(r))
	fmt.Fprintf(w, "  room %s%s, format %s, segment %s\n", r.Room, scope(r), r.Format, orDash(r.Segment))
	fmt.Fprintf(w, "  started %s, duration %s, size %s\n", started(r), msDuration(r.DurationMs), bytesSize(r.SizeBytes))
	if r.EndedAt != nil {
		fmt.Fprintf(w, "  ended %s", r.EndedAt.Local().Format(time.DateTime))
		if r.Reason != "" {
			fmt.Fprintf(w, " (%s)", r.Reason)
		}
		fmt.Fprintln(w)
	}
	if r.Error != nil {
		fmt.Fprintf(w, "  error: %s (%s)\n", r.Error.Message, r.Error.Code)
	}
	if u := r.Upload; u != nil {
		fmt.Fprintf(w, "  upload to %s: %s", u.Target, u.Status)
		if u.LocalDeleted {
			fmt.Fprint(w, ", local files deleted")
		}
		fmt.Fprintln(w)
		if u.Error != nil {
			fmt.Fprintf(w, "  upload error: %s (%s)\n", u.Error.Message, u.Error.Code)
		}
	}
	fmt.Fprintf(w, "  play: %s/v1/recordings/%s/index.m3u8\n", g.server, r.ID)
	for _, p := range r.Pauses {
		end := "now"
		if p.ResumedAt != nil {
			end = p.ResumedAt.Local().Format(time.TimeOnly)
		}
		fmt.Fprintf(w, "  paused %s - %s\n", p.PausedAt.Local().Format(time.TimeOnly), end)
	}
	if len(r.Files) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	t := newTable(w, "FILE", "DURATION", "SIZE", "STARTED", "URL")
	for _, f := range r.Files {
		name := path.Base(f.Path)
		t.row(f.Path, msDuration(f.DurationMs), bytesSize(f.SizeBytes), f.StartedAt.Local().Format(time.DateTime),
			g.server+"/v1/recordings/"+r.ID+"/files/"+url.PathEscape(name))
	}
	return t.flush()
}

func statusText(r *recorder.Recording) string {
	if r.Paused {
		return r.Status + " (paused)"
	}
	return r.Status
}

func started(r *recorder.Recording) string {
	if r.StartedAt == nil {
		return "-"
	}
	return r.StartedAt.Local().Format(time.DateTime)
}

func msDuration(ms int64) string {
	return (time.Duration(ms) * time.Millisecond).Round(100 * time.Millisecond).String()
}

func bytesSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f kB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
