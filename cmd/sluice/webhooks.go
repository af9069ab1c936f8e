package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/webhooks"
)

func newWebhooksCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "webhooks",
		Short: "Manage webhook endpoints, inspect and replay deliveries, receive webhooks locally",
		Long: `Webhook endpoints receive every event as a signed POST (Standard Webhooks: webhook-id,
webhook-timestamp, webhook-signature). Endpoints come from the config file (webhooks.endpoints)
or are added here; failed deliveries are retried with backoff, kept, and can be replayed.`,
		Example: `  sluice webhooks add https://example.com/hooks --events 'recording.*,room.*'
  sluice webhooks list
  sluice webhooks deliveries wh_4f9K… --failed
  sluice webhooks replay wh_4f9K… --since 2h
  sluice webhooks listen --port 9000 --secret whsec_…`,
	}
	cmd.AddCommand(webhooksList(g), webhooksAdd(g), webhooksRemove(g), webhooksTest(g), webhooksDeliveries(g),
		webhooksReplay(g), webhooksSecret(g), webhooksListen(g))
	return cmd
}

func webhooksList(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List webhook endpoints",
		Example: "  sluice webhooks list -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out struct {
				Webhooks []webhooks.Endpoint `json:"webhooks"`
			}
			if err := g.client().do(cmd.Context(), "GET", "/v1/webhooks", nil, &out); err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), out)
			}
			if len(out.Webhooks) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no webhook endpoints")
				return nil
			}
			t := newTable(cmd.OutOrStdout(), "ID", "URL", "EVENTS", "ROOMS", "SOURCE", "STATE")
			for _, e := range out.Webhooks {
				state := "enabled"
				if e.Disabled {
					state = "disabled: " + e.DisabledReason
				}
				t.row(e.ID, e.URL, globs(e.Events, "all but stream.stats"), globs(e.Rooms, "all"), e.Source, state)
			}
			return t.flush()
		},
	}
}

func globs(g []string, none string) string {
	if len(g) == 0 {
		return none
	}
	return strings.Join(g, ",")
}

func webhooksAdd(g *globals) *cobra.Command {
	var req webhooks.AddRequest
	cmd := &cobra.Command{
		Use:   "add URL",
		Short: "Add a webhook endpoint (it gets the events from now on)",
		Long: `Add a webhook endpoint. Without --secret a secret is generated and printed once: configure
your receiver with it to verify the webhook-signature header.`,
		Example: `  sluice webhooks add https://example.com/hooks
  sluice webhooks add https://example.com/hooks --events 'recording.*,broadcast.*' --rooms 'cam-*'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.URL = args[0]
			var added webhooks.Added
			if err := g.client().do(cmd.Context(), "POST", "/v1/webhooks", req, &added); err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), added)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "added webhook %s -> %s\n", added.ID, added.URL)
			fmt.Fprintf(w, "secret: %s\n(shown again only by 'sluice webhooks secret %s')\n", added.Secret, added.ID)
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&req.Events, "events", nil, "event type globs to send (default: all but stream.stats)")
	cmd.Flags().StringSliceVar(&req.Rooms, "rooms", nil, "room name globs to send (default: all)")
	cmd.Flags().StringVar(&req.Secret, "secret", "", "signing secret whsec_<base64> (default: generated)")
	return cmd
}

func webhooksRemove(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "remove ID",
		Short:   "Remove a webhook endpoint added through the API",
		Example: "  sluice webhooks remove wh_4f9KcTq2LmNpXz01",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.client().do(cmd.Context(), "DELETE", "/v1/webhooks/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			return done(g, cmd, "removed webhook "+args[0])
		},
	}
}

func webhooksTest(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "test ID",
		Short: "Send a signed test event (type webhook.test) and show the answer",
		Example: `  sluice webhooks test wh_4f9KcTq2LmNpXz01
  sluice webhooks test backend -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res webhooks.TestResult
			if err := g.client().do(cmd.Context(), "POST", "/v1/webhooks/"+url.PathEscape(args[0])+"/test", nil, &res); err != nil {
				return err
			}
			if g.output == "json" {
				if err := printJSON(cmd.OutOrStdout(), res); err != nil {
					return err
				}
			} else if res.OK {
				fmt.Fprintf(cmd.OutOrStdout(), "ok: HTTP %d in %.0f ms\n", res.StatusCode, res.DurationMs)
			}
			if !res.OK {
				return fmt.Errorf("test delivery failed: %s", res.Error)
			}
			return nil
		},
	}
}

func webhooksDeliveries(g *globals) *cobra.Command {
	var failed bool
	var since string
	var limit int
	cmd := &cobra.Command{
		Use:   "deliveries ID",
		Short: "List an endpoint's recent deliveries (the last state of each event)",
		Example: `  sluice webhooks deliveries backend
  sluice webhooks deliveries backend --failed --since 72h`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			if failed {
				q.Set("status", webhooks.StatusFailed)
			}
			if since != "" {
				q.Set("since", since)
			}
			if limit > 0 {
				q.Set("limit", strconv.Itoa(limit))
			}
			var out struct {
				Deliveries []webhooks.Delivery `json:"deliveries"`
			}
			if err := g.client().do(cmd.Context(), "GET", "/v1/webhooks/"+url.PathEscape(args[0])+"/deliveries?"+q.Encode(), nil, &out); err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), out)
			}
			if len(out.Deliveries) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no deliveries")
				return nil
			}
			t := newTable(cmd.OutOrStdout(), "SEQ", "EVENT", "TYPE", "ROOM", "STATUS", "ATTEMPTS", "LAST", "AT")
			for _, d := range out.Deliveries {
				last := d.Error
				if last == "" && d.StatusCode != 0 {
					last = "HTTP " + strconv.Itoa(d.StatusCode)
				}
				status := d.Status
				if d.Replay {
					status += " (replay)"
				}
				t.row(strconv.FormatUint(d.Seq, 10), d.EventID, d.Type, orDash(d.Room), status, strconv.Itoa(d.Attempts), orDash(last), d.At.Local().Format(time.DateTime))
			}
			return t.flush()
		},
	}
	cmd.Flags().BoolVar(&failed, "failed", false, "only deliveries given up after max_age (replayable)")
	cmd.Flags().StringVar(&since, "since", "", "how far back to look (default 1h; with --failed, webhooks.max_age)")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many, the newest (default 100)")
	return cmd
}

func webhooksReplay(g *globals) *cobra.Command {
	var req webhooks.ReplayRequest
	cmd := &cobra.Command{
		Use:   "replay ID --since SEQ|DURATION",
		Short: "Resend an endpoint's failed deliveries (or all events with --all) since a point",
		Long: `Resend to an endpoint the events whose delivery failed since --since (a seq: the events after it;
a duration: that long ago), or every event for it with --all. A disabled endpoint (it answered
410 Gone) is enabled again and resumes from where it stopped.`,
		Example: `  sluice webhooks replay backend --since 2h
  sluice webhooks replay backend --since 1042 --all`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.Since == "" {
				return errors.New("--since is required (a seq, or a duration such as 2h)")
			}
			var res webhooks.ReplayResult
			if err := g.client().do(cmd.Context(), "POST", "/v1/webhooks/"+url.PathEscape(args[0])+"/replay", req, &res); err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), res)
			}
			msg := fmt.Sprintf("replaying %d events to %s", res.Queued, args[0])
			if res.Enabled {
				msg += " (endpoint enabled again)"
			}
			fmt.Fprintln(cmd.OutOrStdout(), msg)
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Since, "since", "", "a seq (events after it) or a duration (10m)")
	cmd.Flags().BoolVar(&req.All, "all", false, "resend every event for the endpoint, not only the failed ones")
	return cmd
}

func webhooksSecret(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "secret ID",
		Short:   "Print an endpoint's signing secret",
		Example: "  sluice webhooks secret backend",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out struct {
				Secret string `json:"secret"`
			}
			if err := g.client().do(cmd.Context(), "GET", "/v1/webhooks/"+url.PathEscape(args[0])+"/secret", nil, &out); err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintln(cmd.OutOrStdout(), out.Secret)
			return nil
		},
	}
}

func webhooksListen(g *globals) *cobra.Command {
	var port int
	var addr, secret string
	var tolerance time.Duration
	cmd := &cobra.Command{
		Use:   "listen --port P --secret S",
		Short: "Run a local webhook receiver that verifies signatures and prints events",
		Long: `Receive webhooks on http://ADDR:PORT/ (any path), verify each one's signature and timestamp
(within --tolerance, 5 minutes by default) with the endpoint's secret, answer 204, and print one
line per event (NDJSON with -o json). A request that fails verification is answered 401 and
printed as a REJECTED line with the reason. Repeated webhook-ids are marked as duplicates.`,
		Example: `  sluice webhooks listen --port 9000 --secret "$(sluice webhooks secret backend)"
  sluice webhooks listen --port 9000 --secret whsec_… -o json | jq .type`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			signer, err := webhooks.NewSigner(secret)
			if err != nil || secret == "" {
				return errors.New("--secret must be the endpoint's secret, whsec_<base64>")
			}
			l, err := net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(port)))
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "listening on http://%s/ ; verifying signatures\n", l.Addr())
			rx := &listener{out: cmd.OutOrStdout(), json: g.output == "json", signer: signer, tolerance: tolerance, seen: map[string]bool{}}
			srv := &http.Server{Handler: rx, ReadHeaderTimeout: 10 * time.Second}
			stop := context.AfterFunc(cmd.Context(), func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				_ = srv.Shutdown(ctx)
			})
			defer stop()
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&port, "port", 9000, "port to listen on")
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1", "address to listen on (0.0.0.0 for every interface)")
	cmd.Flags().StringVar(&secret, "secret", "", "the endpoint's signing secret (whsec_…)")
	cmd.Flags().DurationVar(&tolerance, "tolerance", webhooks.DefaultTolerance, "how far webhook-timestamp may be from now")
	return cmd
}

// listener is the handler of `sluice webhooks listen`.
type listener struct {
	out       io.Writer
	json      bool
	signer    *webhooks.Signer
	tolerance time.Duration

	mu   sync.Mutex
	seen map[string]bool
}

func (rx *listener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 8<<20))
	if err != nil {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	id := r.Header.Get(webhooks.HeaderID)
	if err := rx.signer.Verify(r.Header, body, time.Now(), rx.tolerance); err != nil {
		rx.print(fmt.Sprintf("REJECTED webhook-id=%s from %s: %v", orDash(id), r.RemoteAddr, err))
		http.Error(w, "signature verification failed", http.StatusUnauthorized)
		return
	}
	rx.mu.Lock()
	dup := rx.seen[id]
	if len(rx.seen) > 100000 {
		rx.seen = map[string]bool{}
	}
	rx.seen[id] = true
	rx.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
	if rx.json {
		rx.print(string(body))
		return
	}
	var ev sfu.Event
	if err := json.Unmarshal(body, &ev); err != nil {
		rx.print(fmt.Sprintf("verified webhook-id=%s but its body is not an event: %v", id, err))
		return
	}
	line := eventLine(&ev)
	if dup {
		line += "  (duplicate)"
	}
	rx.print(line)
}

func (rx *listener) print(line string) {
	rx.mu.Lock()
	defer rx.mu.Unlock()
	fmt.Fprintln(rx.out, line)
}
