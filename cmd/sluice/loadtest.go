package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluice-media/sluice/sfu/auth"
)

// loadOptions are the flags of `sluice loadtest`.
type loadOptions struct {
	room        string
	subscribers int
	ramp        time.Duration
	settle      time.Duration
	duration    time.Duration
	baseline    time.Duration
	publish     bool
}

func newLoadtestCmd(g *globals) *cobra.Command {
	o := loadOptions{}
	cmd := &cobra.Command{
		Use:   "loadtest",
		Short: "Load a running daemon with WHEP viewers and report its cost",
		Long: `Publish the built-in clip (1280x720 30 fps H.264 at about 2.6 Mbit/s, and Opus) to a room
over WHIP, ramp in N WHEP subscribers, measure for a while, and print what the subscribers got
(setup time, bitrate, loss, jitter) and what it cost the daemon (CPU and memory from its /metrics):
CPU per subscriber and per RTP packet sent are net of the publisher alone, measured first.

Run it against a daemon on a quiet machine; the subscribers run in this process and cost CPU too.`,
		Example: `  sluice loadtest -n 100 --duration 30s
  sluice loadtest -n 20 --room stage --no-publish      # viewers of an existing publisher
  sluice loadtest -n 100 -o json | jq .cpu_per_packet_us`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rep, err := runLoadtest(cmd.Context(), g, o, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), rep)
			}
			rep.print(cmd.OutOrStdout())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.room, "room", "loadtest", "room to publish to and play")
	f.IntVarP(&o.subscribers, "subscribers", "n", 10, "number of WHEP subscribers")
	f.DurationVar(&o.ramp, "ramp", 10*time.Second, "time over which subscribers are started")
	f.DurationVar(&o.settle, "settle", 3*time.Second, "wait after the ramp before measuring")
	f.DurationVar(&o.duration, "duration", 20*time.Second, "measurement window")
	f.DurationVar(&o.baseline, "baseline", 5*time.Second, "publisher-only measurement before the ramp")
	f.BoolVar(&o.publish, "publish", true, "publish the built-in clip (--no-publish plays an existing publisher)")
	cmd.Flags().Lookup("publish").NoOptDefVal = "true"
	cmd.Flags().Bool("no-publish", false, "")
	_ = cmd.Flags().MarkHidden("no-publish")
	cmd.PreRun = func(cmd *cobra.Command, _ []string) {
		if v, _ := cmd.Flags().GetBool("no-publish"); v {
			o.publish = false
		}
	}
	return cmd
}

// loadReport is the result of a load test.
type loadReport struct {
	Subscribers     int     `json:"subscribers"`
	Connected       int     `json:"connected"`
	Failed          int     `json:"failed"`
	FirstError      string  `json:"first_error,omitempty"`
	SetupP50Ms      float64 `json:"setup_p50_ms"`
	SetupP95Ms      float64 `json:"setup_p95_ms"`
	AnsweredP50Ms   float64 `json:"answered_p50_ms"`
	ConnectedP50Ms  float64 `json:"connected_p50_ms"`
	WindowSeconds   float64 `json:"window_seconds"`
	BitrateKbps     float64 `json:"bitrate_kbps_per_subscriber"`
	LossPct         float64 `json:"packet_loss_pct"`
	JitterMs        float64 `json:"jitter_ms"`
	IdleRSSMiB      float64 `json:"daemon_idle_rss_mib"`
	RSSMiB          float64 `json:"daemon_rss_mib"`
	RSSPerSubMiB    float64 `json:"rss_per_subscriber_mib"`
	BaselineCores   float64 `json:"daemon_cpu_cores_publisher_only"`
	Cores           float64 `json:"daemon_cpu_cores"`
	PacketsPerSec   float64 `json:"packets_sent_per_second"`
	CPUPerSubMs     float64 `json:"cpu_ms_per_second_per_subscriber"`
	CPUPerPacketUs  float64 `json:"cpu_per_packet_us"`
	DroppedInDaemon float64 `json:"packets_dropped_in_daemon"`
}

func runLoadtest(ctx context.Context, g *globals, o loadOptions, progress io.Writer) (*loadReport, error) {
	if o.subscribers < 1 || o.subscribers > 2000 {
		return nil, errors.New("--subscribers must be between 1 and 2000")
	}
	base := strings.TrimRight(g.server, "/")
	pubToken, subToken, err := loadTokens(g, o.room)
	if err != nil {
		return nil, err
	}
	api, err := loadAPI(base)
	if err != nil {
		return nil, err
	}
	rep := &loadReport{Subscribers: o.subscribers}
	idle, err := scrape(ctx, base)
	if err != nil {
		return nil, err
	}
	rep.IdleRSSMiB = idle["process_resident_memory_bytes"] / (1 << 20)

	var pubWG sync.WaitGroup
	pubCtx, stopPub := context.WithCancel(context.Background())
	defer func() { stopPub(); pubWG.Wait() }()
	if o.publish {
		fmt.Fprintf(progress, "publishing the built-in clip to %s\n", o.room)
		pub, err := publishClip(ctx, api, base+"/whip/"+url.PathEscape(o.room), pubToken)
		if err != nil {
			return nil, err
		}
		defer pub.close()
		pubWG.Add(1)
		go func() { defer pubWG.Done(); pub.run(pubCtx) }()
	}
	if err := sleepCtx(ctx, 2*time.Second); err != nil { // let the tracks appear
		return nil, err
	}
	b0, err := scrape(ctx, base)
	if err != nil {
		return nil, err
	}
	if err := sleepCtx(ctx, o.baseline); err != nil {
		return nil, err
	}
	b1, err := scrape(ctx, base)
	if err != nil {
		return nil, err
	}
	rep.BaselineCores = rate(b0, b1, "process_cpu_seconds_total")

	fmt.Fprintf(progress, "ramping %d subscribers over %s\n", o.subscribers, o.ramp)
	subs := make([]*loadSubscriber, o.subscribers)
	var wg sync.WaitGroup
	step := o.ramp / time.Duration(o.subscribers)
	for i := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			subs[i] = subscribe(ctx, api, base+"/whep/"+url.PathEscape(o.room), subToken)
		}()
		if err := sleepCtx(ctx, step); err != nil {
			break
		}
	}
	wg.Wait()
	defer func() {
		for _, s := range subs {
			if s != nil {
				s.close()
			}
		}
	}()
	if err := sleepCtx(ctx, o.settle); err != nil {
		return nil, err
	}

	m0, err := scrape(ctx, base)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	c0 := make([][2][4]float64, len(subs))
	for i, s := range subs {
		c0[i][0], c0[i][1] = s.counters()
	}
	fmt.Fprintf(progress, "measuring for %s\n", o.duration)
	if err := sleepCtx(ctx, o.duration); err != nil {
		return nil, err
	}
	m1, err := scrape(ctx, base)
	if err != nil {
		return nil, err
	}
	window := time.Since(start).Seconds()
	rep.WindowSeconds = math.Round(window*10) / 10

	var setups, answered, connected []float64
	var bytes, received, expected, jitter float64
	for i, s := range subs {
		v, a := s.counters()
		if s.failed.Load() || v[0] == 0 {
			rep.Failed++
			if rep.FirstError == "" && s.lastErr != nil {
				rep.FirstError = s.lastErr.Error()
			}
			continue
		}
		rep.Connected++
		setups = append(setups, float64(s.setup.Load())/1e6)
		answered = append(answered, float64(s.answered.Load())/1e6)
		connected = append(connected, float64(s.connect.Load())/1e6)
		bytes += v[2] - c0[i][0][2] + a[2] - c0[i][1][2]
		received += v[0] - c0[i][0][0] + a[0] - c0[i][1][0]
		expected += v[1] - c0[i][0][1] + a[1] - c0[i][1][1]
		jitter += v[3]
	}
	if rep.Connected > 0 {
		n := float64(rep.Connected)
		rep.BitrateKbps = round1(bytes * 8 / 1000 / window / n)
		rep.JitterMs = round2(jitter / n)
		if expected > 0 {
			rep.LossPct = round3(math.Max(0, 1-received/expected) * 100)
		}
		rep.SetupP50Ms, rep.SetupP95Ms = round1(percentile(setups, 50)), round1(percentile(setups, 95))
		rep.AnsweredP50Ms, rep.ConnectedP50Ms = round1(percentile(answered, 50)), round1(percentile(connected, 50))
	}
	rep.Cores = round3(rate(m0, m1, "process_cpu_seconds_total"))
	rep.RSSMiB = round1(m1["process_resident_memory_bytes"] / (1 << 20))
	rep.PacketsPerSec = round1(rate(m0, m1, "sluice_packets_out_total"))
	rep.DroppedInDaemon = m1["sluice_packets_dropped_total"] - m0["sluice_packets_dropped_total"]
	net := math.Max(0, rep.Cores-rep.BaselineCores)
	if rep.Connected > 0 {
		rep.CPUPerSubMs = round3(net * 1000 / float64(rep.Connected))
		rep.RSSPerSubMiB = round3((rep.RSSMiB - b1["process_resident_memory_bytes"]/(1<<20)) / float64(rep.Connected))
	}
	if rep.PacketsPerSec > 0 {
		rep.CPUPerPacketUs = round2(net * 1e6 / rep.PacketsPerSec)
	}
	rep.BaselineCores = round3(rep.BaselineCores)
	return rep, nil
}

// loadTokens mints publish and subscribe tokens when an API key is given (key mode).
func loadTokens(g *globals, room string) (pub, sub string, err error) {
	if g.apiKey == "" {
		return "", "", nil
	}
	exp := time.Now().Add(24 * time.Hour).Unix()
	pub, err = auth.Sign(g.apiKey, g.apiSecret, auth.Claims{Identity: "loadtest-publisher", ExpiresAt: exp, Grants: auth.Grants{Room: room, Publish: true}})
	if err != nil {
		return "", "", err
	}
	sub, err = auth.Sign(g.apiKey, g.apiSecret, auth.Claims{ExpiresAt: exp, Grants: auth.Grants{Room: room, Subscribe: true}})
	return pub, sub, err
}

// scrape reads the daemon's Prometheus metrics (unlabelled samples, summed over labels).
func scrape(ctx context.Context, base string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading the daemon's metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("reading the daemon's metrics: %s", resp.Status)
	}
	out := map[string]float64{"_at": float64(time.Now().UnixNano()) / 1e9}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		if v, err := strconv.ParseFloat(strings.Fields(value)[0], 64); err == nil {
			out[name] += v
		}
	}
	return out, sc.Err()
}

func rate(a, b map[string]float64, key string) float64 {
	return (b[key] - a[key]) / (b["_at"] - a["_at"])
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func round1(x float64) float64 { return math.Round(x*10) / 10 }
func round2(x float64) float64 { return math.Round(x*100) / 100 }
func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

func (r *loadReport) print(w io.Writer) {
	t := newTable(w)
	t.row("subscribers", fmt.Sprintf("%d connected, %d failed (of %d)", r.Connected, r.Failed, r.Subscribers))
	if r.FirstError != "" {
		t.row("first error", r.FirstError)
	}
	t.row("setup", fmt.Sprintf("p50 %.0f ms, p95 %.0f ms (offer to first video packet; p50 answer %.0f ms, connected %.0f ms)",
		r.SetupP50Ms, r.SetupP95Ms, r.AnsweredP50Ms, r.ConnectedP50Ms))
	t.row("received", fmt.Sprintf("%.0f kbit/s per subscriber, loss %.3f %%, jitter %.2f ms", r.BitrateKbps, r.LossPct, r.JitterMs))
	t.row("daemon CPU", fmt.Sprintf("%.3f cores (publisher alone %.3f)", r.Cores, r.BaselineCores))
	t.row("daemon memory", fmt.Sprintf("%.1f MiB RSS (idle %.1f MiB), %.2f MiB per subscriber", r.RSSMiB, r.IdleRSSMiB, r.RSSPerSubMiB))
	t.row("packets sent", fmt.Sprintf("%.0f per second, %.0f dropped in the daemon", r.PacketsPerSec, r.DroppedInDaemon))
	t.row("cost", fmt.Sprintf("%.3f ms CPU per second per subscriber, %.2f µs per RTP packet sent", r.CPUPerSubMs, r.CPUPerPacketUs))
	t.row("window", fmt.Sprintf("%.1f s", r.WindowSeconds))
	_ = t.flush()
}
