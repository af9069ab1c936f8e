package main

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluice-media/sluice/cmd/sluice/loadgen"
	"github.com/sluice-media/sluice/sfu"
)

// newLoadtestCmd is `sluice loadtest`: the command line of package loadgen.
func newLoadtestCmd(g *globals) *cobra.Command {
	o := loadgen.Options{}
	cmd := &cobra.Command{
		Use:   "loadtest",
		Short: "Load a running daemon with WHEP viewers and RTSP readers and report its cost",
		Long: `Publish the built-in clip (1280x720 30 fps H.264 at about 2.6 Mbit/s, and Opus) to a room
over WHIP, ramp in N WHEP subscribers and/or RTSP readers (TCP), measure for a while, and print
what they got (setup time, bitrate, loss, jitter) and what it cost the daemon (CPU and memory from
its /metrics). Costs are net of what ran before: the publisher alone is measured first; with both
kinds, the WHEP subscribers are ramped and measured, then the RTSP readers join and are measured
in a window of their own, so that each protocol's cost per viewer stands on its own.

RTSP readers play rtsp://HOST:8554/<room>, HOST taken from --server, unless --rtsp-url names the
RTSP server; with --api-key they carry a subscribe token (?token=).

An overloaded daemon refuses new subscribers (503) and sheds the newest (stream.failed, reason
overloaded): the report counts them apart (refused, shed), with the overloaded events seen on the
daemon's event stream (with --api-key each subscriber's token names it, and the events are matched
to the shed subscribers), the received figures of the survivors and of the shed, the daemon's CPU
before, while and after shedding, and a per-second timeline in -o json.

The viewers read their sockets as browsers and pion do, a packet at a time; the report counts the
packets the kernel dropped at their sockets (full receive buffers), which are part of the loss.
Against a loopback daemon --receive-offload has each viewer read with UDP receive offload
instead, so that the kernel's receive work is not charged to the daemon.

Run it against a daemon on a quiet machine; the viewers run in this process and cost CPU too.`,
		Example: `  sluice loadtest -n 100 --duration 30s
  sluice loadtest -n 0 --rtsp 50 --duration 30s        # RTSP readers only
  sluice loadtest -n 20 --rtsp 20 --rtsp-url rtsp://10.0.0.5:8554
  sluice loadtest -n 20 --room stage --no-publish      # viewers of an existing publisher
  sluice loadtest -n 100 -o json | jq .cpu_per_packet_us
  sluice loadtest -n 200 -o json | jq .overload.after_shedding`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Server, o.APIKey, o.APISecret = g.server, g.apiKey, g.apiSecret
			o.Follow = followFailed(g.client())
			rep, err := loadgen.Run(cmd.Context(), o, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), rep)
			}
			rep.Print(cmd.OutOrStdout())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Room, "room", "loadtest", "room to publish to and play")
	f.IntVarP(&o.Subscribers, "subscribers", "n", 10, "number of WHEP subscribers")
	f.IntVar(&o.RTSPReaders, "rtsp", 0, "number of RTSP readers (TCP)")
	f.StringVar(&o.RTSPURL, "rtsp-url", "", "the daemon's RTSP server (default rtsp://<host of --server>:8554)")
	f.DurationVar(&o.Ramp, "ramp", 10*time.Second, "time over which subscribers (and again readers) are started")
	f.DurationVar(&o.Settle, "settle", 3*time.Second, "wait after a ramp before measuring")
	f.DurationVar(&o.Duration, "duration", 20*time.Second, "measurement window (one per kind of viewer)")
	f.DurationVar(&o.Baseline, "baseline", 5*time.Second, "publisher-only measurement before the ramp")
	f.BoolVar(&o.ReceiveOffload, "receive-offload", false, "viewers read with UDP receive offload (loopback daemon only; default: a packet at a time, as browsers)")
	f.BoolVar(&o.Publish, "publish", true, "publish the built-in clip (--no-publish plays an existing publisher)")
	cmd.Flags().Lookup("publish").NoOptDefVal = "true"
	cmd.Flags().Bool("no-publish", false, "")
	_ = cmd.Flags().MarkHidden("no-publish")
	cmd.PreRun = func(cmd *cobra.Command, _ []string) {
		if v, _ := cmd.Flags().GetBool("no-publish"); v {
			o.Publish = false
		}
	}
	return cmd
}

// followFailed follows the daemon's stream.failed events for the load generator's overload
// watch.
func followFailed(c *apiClient) func(ctx context.Context, room string, connected func(), onEvent func(raw []byte)) error {
	return func(ctx context.Context, room string, connected func(), onEvent func(raw []byte)) error {
		o := followOptions{types: []string{sfu.EventStreamFailed}, room: room, connected: connected}
		return c.followEvents(ctx, o, func(_ uint64, raw []byte) error { onEvent(raw); return nil }, func(string) {})
	}
}
