// Command sluice is the recording and streaming daemon (`sluice serve`) and its command-line
// client: every other subcommand talks to a running daemon's HTTP API.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time (-ldflags "-X main.version=…").
var version = "dev"

// globals are the flags every client command shares.
type globals struct {
	server    string
	apiKey    string
	apiSecret string
	output    string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		var exit exitError
		if errors.As(err, &exit) {
			os.Exit(exit.code)
		}
		fmt.Fprintln(os.Stderr, "sluice:", err)
		os.Exit(1)
	}
}

// exitError ends the process with a code after its message was printed.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "sluice",
		Short: "Recording and streaming pipeline daemon, and its client",
		Long: `sluice takes media in over WebRTC (WHIP), RTMP and RTSP, fans it out to WebRTC viewers (WHEP),
recordings and RTMP broadcasts, and reports every change as an event.

Run the daemon with 'sluice serve'; every other command is a client of its HTTP API.`,
		Example: `  sluice serve --config sluice.yaml
  sluice status
  sluice rooms list -o json`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.server, "server", envOr("SLUICE_URL", "http://127.0.0.1:8800"), "daemon URL (env SLUICE_URL)")
	pf.StringVar(&g.apiKey, "api-key", os.Getenv("SLUICE_API_KEY"), "API key, when the daemon has auth keys (env SLUICE_API_KEY)")
	pf.StringVar(&g.apiSecret, "api-secret", os.Getenv("SLUICE_API_SECRET"), "API secret of --api-key (env SLUICE_API_SECRET)")
	pf.StringVarP(&g.output, "output", "o", "text", "output format: text or json")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if g.output != "text" && g.output != "json" {
			return fmt.Errorf("--output must be text or json, not %q", g.output)
		}
		return nil
	}
	root.AddCommand(newServeCmd(), newVersionCmd(g), newStatusCmd(g), newRoomsCmd(g), newIngestCmd(g), newRecordCmd(g), newTokenCmd(g),
		newWebhooksCmd(g), newBroadcastCmd(g), newLoadtestCmd(g))
	return root
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the version of this binary",
		Example: "  sluice version",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), map[string]string{"version": version})
			}
			fmt.Fprintln(cmd.OutOrStdout(), "sluice", version)
			return nil
		},
	}
}
