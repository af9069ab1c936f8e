// Package loadgen is the load generator of `sluice loadtest`: it publishes the built-in clip
// over WHIP, ramps WHEP subscribers and RTSP readers against a running daemon, and reports what
// they received and what they cost the daemon (from its /metrics).
package loadgen

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
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
)

// Options describe a load test: the flags of `sluice loadtest` and the client's globals.
type Options struct {
	Room        string
	Subscribers int
	RTSPReaders int
	RTSPURL     string
	Ramp        time.Duration
	Settle      time.Duration
	Duration    time.Duration
	Baseline    time.Duration
	Publish     bool
	// ReceiveOffload has each WHEP viewer read with UDP receive offload against a loopback
	// daemon (gro.go); by default viewers read as browsers and pion do, a packet at a time.
	ReceiveOffload bool
	// Server is the daemon's API base URL; APIKey and APISecret, when set, sign the tokens.
	Server, APIKey, APISecret string
	// Follow follows the daemon's stream.failed events of room, calling connected at each
	// (re)connection and onEvent with each event's JSON, until ctx ends.
	Follow func(ctx context.Context, room string, connected func(), onEvent func(raw []byte)) error
}

// Report is the result of a load test. The WHEP fields describe the WHEP window; the
// daemon's totals (daemon_cpu_cores, daemon_rss_mib, packets_sent_per_second) the last window,
// with every viewer connected.
//
// Connected counts the subscribers that received video (the shed ones included), Failed those
// that did not, Refused those the daemon refused at admission (503 overloaded), Shed those whose
// session the daemon ended during the run. The received figures (bitrate, loss, jitter) are
// the survivors': connected and not shed.
type Report struct {
	Subscribers    int     `json:"subscribers"`
	Connected      int     `json:"connected"`
	Failed         int     `json:"failed"`
	Refused        int     `json:"refused"`
	Shed           int     `json:"shed"`
	FirstError     string  `json:"first_error,omitempty"`
	SetupP50Ms     float64 `json:"setup_p50_ms"`
	SetupP95Ms     float64 `json:"setup_p95_ms"`
	AnsweredP50Ms  float64 `json:"answered_p50_ms"`
	ConnectedP50Ms float64 `json:"connected_p50_ms"`
	WindowSeconds  float64 `json:"window_seconds"`
	BitrateKbps    float64 `json:"bitrate_kbps_per_subscriber"`
	LossPct        float64 `json:"packet_loss_pct"`
	JitterMs       float64 `json:"jitter_ms"`
	// GRO counts the subscribers that read with UDP receive offload (--receive-offload
	// against a loopback daemon, gro.go): with it, the loopback receivers' kernel work is not
	// counted in the daemon's CPU, and the daemon's bursts do not overflow their sockets.
	ReceiveOffload bool `json:"receive_offload"`
	GRO            int  `json:"subscribers_with_receive_offload"`
	// SocketDrops counts the packets the kernel dropped at this process's UDP sockets during
	// the WHEP window (their receive buffers were full: the viewers did not read fast enough
	// for what arrived), RcvbufErrors the same on the whole machine (/proc/net/snmp: other
	// programs' sockets too). Both are in the loss figure; nil where /proc does not say.
	SocketDrops     *uint64 `json:"receiver_socket_drops,omitempty"`
	RcvbufErrors    *uint64 `json:"udp_rcvbuf_errors,omitempty"`
	IdleRSSMiB      float64 `json:"daemon_idle_rss_mib"`
	RSSMiB          float64 `json:"daemon_rss_mib"`
	RSSPerSubMiB    float64 `json:"rss_per_subscriber_mib"`
	BaselineCores   float64 `json:"daemon_cpu_cores_publisher_only"`
	Cores           float64 `json:"daemon_cpu_cores"`
	PacketsPerSec   float64 `json:"packets_sent_per_second"`
	CPUPerSubMs     float64 `json:"cpu_ms_per_second_per_subscriber"`
	CPUPerPacketUs  float64 `json:"cpu_per_packet_us"`
	DroppedInDaemon float64 `json:"packets_dropped_in_daemon"`
	// SendDropped counts the packets the daemon's WebRTC send queue could not take (overload).
	SendDropped float64         `json:"packets_dropped_in_webrtc_send"`
	Overload    *OverloadReport `json:"overload,omitempty"`
	RTSP        *RTSPReport     `json:"rtsp,omitempty"`
}

// RTSPReport is the RTSP readers' part of a load test, measured in its own window; the costs
// are net of the window before (the WHEP subscribers, or the publisher alone).
type RTSPReport struct {
	Readers         int     `json:"readers"`
	URL             string  `json:"url"`
	Connected       int     `json:"connected"`
	Failed          int     `json:"failed"`
	FirstError      string  `json:"first_error,omitempty"`
	SetupP50Ms      float64 `json:"setup_p50_ms"`
	SetupP95Ms      float64 `json:"setup_p95_ms"`
	WindowSeconds   float64 `json:"window_seconds"`
	BitrateKbps     float64 `json:"bitrate_kbps_per_reader"`
	LossPct         float64 `json:"packet_loss_pct"`
	JitterMs        float64 `json:"jitter_ms"`
	Cores           float64 `json:"daemon_cpu_cores"`
	RSSMiB          float64 `json:"daemon_rss_mib"`
	RSSPerReaderMiB float64 `json:"rss_per_reader_mib"`
	PacketsPerSec   float64 `json:"packets_sent_per_second"`
	CPUPerReaderMs  float64 `json:"cpu_ms_per_second_per_reader"`
	CPUPerPacketUs  float64 `json:"cpu_per_packet_us"`
}

// Run publishes, ramps the viewers, measures and returns the report; progress gets a line per
// step.
func Run(ctx context.Context, o Options, progress io.Writer) (*Report, error) {
	if o.Subscribers < 0 || o.Subscribers > 2000 {
		return nil, errors.New("--subscribers must be between 0 and 2000")
	}
	if o.RTSPReaders < 0 || o.RTSPReaders > 2000 {
		return nil, errors.New("--rtsp must be between 0 and 2000")
	}
	if o.Subscribers+o.RTSPReaders == 0 {
		return nil, errors.New("nothing to measure: give -n or --rtsp more than 0")
	}
	if o.Duration <= 0 {
		return nil, errors.New("--duration must be positive")
	}
	base := strings.TrimRight(o.Server, "/")
	var rtspURL string
	if o.RTSPReaders > 0 {
		u, err := rtspBase(base, o.RTSPURL)
		if err != nil {
			return nil, err
		}
		rtspURL = u
	}
	pubToken, subToken, err := loadTokens(o, o.Room)
	if err != nil {
		return nil, err
	}
	api, viewerAPI, err := loadAPI(base, o.ReceiveOffload)
	if err != nil {
		return nil, err
	}
	rep := &Report{Subscribers: o.Subscribers}
	mtok, err := metricsToken(o)
	if err != nil {
		return nil, err
	}
	idle, err := scrape(ctx, base, mtok)
	if err != nil {
		return nil, err
	}
	rep.IdleRSSMiB = round1(idle["process_resident_memory_bytes"] / (1 << 20))

	var pubWG sync.WaitGroup
	pubCtx, stopPub := context.WithCancel(context.Background())
	defer func() { stopPub(); pubWG.Wait() }()
	if o.Publish {
		fmt.Fprintf(progress, "publishing the built-in clip to %s\n", o.Room)
		pub, err := publishClip(ctx, api, base+"/whip/"+url.PathEscape(o.Room), pubToken)
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
	b0, err := scrape(ctx, base, mtok)
	if err != nil {
		return nil, err
	}
	if err := sleepCtx(ctx, o.Baseline); err != nil {
		return nil, err
	}
	b1, err := scrape(ctx, base, mtok)
	if err != nil {
		return nil, err
	}
	rep.BaselineCores = rate(b0, b1, "process_cpu_seconds_total")
	// before is the window the next kind of viewer is measured against.
	before := loadWindow{m0: b0, m1: b1}
	last := before

	if o.Subscribers > 0 {
		// In key mode each subscriber's token names it, so that the daemon's events about it
		// can be told apart.
		keyMode := o.APIKey != ""
		subs := make([]*loadSubscriber, o.Subscribers)
		tokens := make([]string, o.Subscribers)
		run := sfu.NewID("")[:6]
		for i := range subs {
			tokens[i] = subToken
			if keyMode {
				identity := fmt.Sprintf("loadtest-%s-%d", run, i)
				if tokens[i], err = subscriberToken(o, o.Room, identity); err != nil {
					return nil, err
				}
				subs[i] = newLoadSubscriber(identity)
			} else {
				subs[i] = newLoadSubscriber("")
			}
		}
		defer func() {
			for _, s := range subs {
				s.close()
			}
		}()
		// The daemon's word on whom it shed, and a sample of everyone every second.
		watchCtx, stopWatch := context.WithCancel(ctx)
		var watchWG sync.WaitGroup
		defer func() { stopWatch(); watchWG.Wait() }()
		watch := watchOverload(watchCtx, o.Follow, o.Room, &watchWG)
		if !watch.wait(ctx, 5*time.Second) {
			fmt.Fprintln(progress, "warning: the daemon's event stream is not connected yet; overload events may be missed")
		}
		sampler := &loadSampler{base: base, token: mtok, subs: subs}
		watchWG.Add(1)
		go func() { defer watchWG.Done(); sampler.run(watchCtx) }()

		fmt.Fprintf(progress, "ramping %d subscribers over %s\n", o.Subscribers, o.Ramp)
		var gro atomic.Int64
		if err := ramp(ctx, len(subs), o.Ramp, func(i int) {
			vapi, release := api, func() {}
			if viewerAPI != nil {
				if a, r, err := viewerAPI(); err == nil {
					vapi, release = a, r
					gro.Add(1)
				}
			}
			subs[i].start(ctx, vapi, release, base+"/whep/"+url.PathEscape(o.Room), tokens[i])
		}); err != nil {
			return nil, err
		}
		rep.ReceiveOffload, rep.GRO = o.ReceiveOffload, int(gro.Load())
		clients := make([]loadClient, len(subs))
		for i, s := range subs {
			clients[i] = s
		}
		w, err := measure(ctx, base, mtok, o.Settle, o.Duration, clients, progress)
		if err != nil {
			return nil, err
		}
		stopWatch()
		watchWG.Wait()
		unnoticed := watch.markNamed(subs)
		rep.Overload = overloadSummary(subs, sampler.samples, w, watch, keyMode, unnoticed)
		sum := summarize(clients, w)
		rep.Connected, rep.Failed, rep.FirstError = sum.connected, sum.failed, sum.firstError
		rep.Refused, rep.Shed = sum.refused, sum.shed
		rep.WindowSeconds, rep.BitrateKbps, rep.LossPct, rep.JitterMs = round1(w.seconds), sum.bitrateKbps, sum.lossPct, sum.jitterMs
		rep.SetupP50Ms, rep.SetupP95Ms = round1(percentile(sum.setupsMs, 50)), round1(percentile(sum.setupsMs, 95))
		var answered, connected []float64
		for _, i := range sum.ok {
			answered = append(answered, float64(subs[i].answered.Load())/1e6)
			connected = append(connected, float64(subs[i].connect.Load())/1e6)
		}
		rep.AnsweredP50Ms, rep.ConnectedP50Ms = round1(percentile(answered, 50)), round1(percentile(connected, 50))
		rep.CPUPerSubMs, rep.CPUPerPacketUs, rep.RSSPerSubMiB = costs(before, w, rep.Connected)
		if w.d0.ok && w.d1.ok {
			own, machine := w.d1.since(w.d0)
			rep.SocketDrops, rep.RcvbufErrors = &own, &machine
		}
		before, last = w, w
	}

	if o.RTSPReaders > 0 {
		rr := &RTSPReport{Readers: o.RTSPReaders, URL: rtspURL}
		rep.RTSP = rr
		fmt.Fprintf(progress, "ramping %d RTSP readers of %s over %s\n", o.RTSPReaders, rtspURL, o.Ramp)
		readers := make([]*rtspReader, o.RTSPReaders)
		defer func() {
			for _, r := range readers {
				if r != nil {
					r.close()
				}
			}
		}()
		if err := ramp(ctx, len(readers), o.Ramp, func(i int) {
			readers[i] = readRTSP(ctx, rtspURL+"/"+url.PathEscape(o.Room), subToken)
		}); err != nil {
			return nil, err
		}
		clients := make([]loadClient, len(readers))
		for i, r := range readers {
			clients[i] = r
		}
		w, err := measure(ctx, base, mtok, o.Settle, o.Duration, clients, progress)
		if err != nil {
			return nil, err
		}
		sum := summarize(clients, w)
		rr.Connected, rr.Failed, rr.FirstError = sum.connected, sum.failed, sum.firstError
		rr.WindowSeconds, rr.BitrateKbps, rr.LossPct, rr.JitterMs = round1(w.seconds), sum.bitrateKbps, sum.lossPct, sum.jitterMs
		rr.SetupP50Ms, rr.SetupP95Ms = round1(percentile(sum.setupsMs, 50)), round1(percentile(sum.setupsMs, 95))
		rr.Cores = round3(w.rate("process_cpu_seconds_total"))
		rr.RSSMiB = round1(w.m1["process_resident_memory_bytes"] / (1 << 20))
		rr.PacketsPerSec = round1(w.rate("sluice_packets_out_total"))
		rr.CPUPerReaderMs, rr.CPUPerPacketUs, rr.RSSPerReaderMiB = costs(before, w, rr.Connected)
		last = w
	}

	rep.Cores = round3(last.rate("process_cpu_seconds_total"))
	rep.RSSMiB = round1(last.m1["process_resident_memory_bytes"] / (1 << 20))
	rep.PacketsPerSec = round1(last.rate("sluice_packets_out_total"))
	rep.DroppedInDaemon = last.m1["sluice_packets_dropped_total"] - b1["sluice_packets_dropped_total"]
	rep.SendDropped = last.m1["sluice_webrtc_send_dropped_total"] - b1["sluice_webrtc_send_dropped_total"]
	rep.BaselineCores = round3(rep.BaselineCores)
	return rep, nil
}

// ramp starts n viewers evenly over the given time, each on its own goroutine, and waits for
// all of their setups.
func ramp(ctx context.Context, n int, over time.Duration, start func(i int)) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	step := over / time.Duration(n)
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); start(i) }()
		if err := sleepCtx(ctx, step); err != nil {
			return err
		}
	}
	return nil
}

// loadClient is what the report reads of a WHEP subscriber or an RTSP reader.
type loadClient interface {
	// counters returns video and audio: packets received, expected, bytes, jitter in ms.
	counters() (video, audio [4]float64)
	// result returns the setup time in nanoseconds, whether the viewer failed, and why.
	result() (setupNs int64, failed bool, err error)
	// outcome reports whether the daemon refused the viewer at admission (503), or ended its
	// session after it had played (shed).
	outcome() (refused, shed bool)
}

// loadWindow is one measurement: the daemon's metrics and the receiving sockets' drops at its
// ends, and the viewers' counters at its start.
type loadWindow struct {
	m0, m1     map[string]float64
	d0, d1     udpDrops
	c0         [][2][4]float64
	start, end time.Time
	seconds    float64
}

func (w loadWindow) rate(key string) float64 { return rate(w.m0, w.m1, key) }

// measure waits settle, then measures one window of d.
func measure(ctx context.Context, base, mtok string, settle, d time.Duration, clients []loadClient, progress io.Writer) (loadWindow, error) {
	if err := sleepCtx(ctx, settle); err != nil {
		return loadWindow{}, err
	}
	m0, err := scrape(ctx, base, mtok)
	if err != nil {
		return loadWindow{}, err
	}
	start := time.Now()
	w := loadWindow{m0: m0, d0: readUDPDrops(), c0: make([][2][4]float64, len(clients)), start: start}
	for i, c := range clients {
		w.c0[i][0], w.c0[i][1] = c.counters()
	}
	fmt.Fprintf(progress, "measuring for %s\n", d)
	if err := sleepCtx(ctx, d); err != nil {
		return loadWindow{}, err
	}
	w.d1 = readUDPDrops()
	if w.m1, err = scrape(ctx, base, mtok); err != nil {
		return loadWindow{}, err
	}
	w.end = time.Now()
	w.seconds = w.end.Sub(start).Seconds()
	return w, nil
}

// loadSummary is what a group of viewers received in a window.
type loadSummary struct {
	connected, failed int
	refused, shed     int
	firstError        string
	ok                []int // indexes of the connected viewers
	setupsMs          []float64
	bitrateKbps       float64
	lossPct           float64
	jitterMs          float64
}

// summarize adds up the viewers' counters over the window. A viewer refused at admission counts
// as refused; one the daemon shed as shed (and connected if it played); one that failed
// otherwise, or never got a video packet, as failed. What was received is the survivors': the
// shed viewers are not in the figures.
func summarize(clients []loadClient, w loadWindow) loadSummary {
	var sum loadSummary
	var bytes, received, expected, jitter float64
	for i, c := range clients {
		v, a := c.counters()
		setup, failed, err := c.result()
		refused, shed := c.outcome()
		if refused {
			sum.refused++
			continue
		}
		if shed && v[0] == 0 { // shed before it played
			sum.shed++
			continue
		}
		if failed || v[0] == 0 {
			sum.failed++
			if sum.firstError == "" && err != nil {
				sum.firstError = err.Error()
			}
			continue
		}
		sum.connected++
		sum.ok = append(sum.ok, i)
		sum.setupsMs = append(sum.setupsMs, float64(setup)/1e6)
		if shed {
			sum.shed++
			continue
		}
		c0 := w.c0[i]
		bytes += v[2] - c0[0][2] + a[2] - c0[1][2]
		received += v[0] - c0[0][0] + a[0] - c0[1][0]
		expected += v[1] - c0[0][1] + a[1] - c0[1][1]
		jitter += v[3]
	}
	if survivors := sum.connected - sum.shed; survivors > 0 && w.seconds > 0 {
		n := float64(survivors)
		sum.bitrateKbps = round1(bytes * 8 / 1000 / w.seconds / n)
		sum.jitterMs = round2(jitter / n)
		if expected > 0 {
			sum.lossPct = round3(math.Max(0, 1-received/expected) * 100)
		}
	}
	return sum
}

// costs are a window's CPU per viewer (ms per second), per RTP packet sent (µs) and memory per
// viewer (MiB), net of the window before it.
func costs(before, w loadWindow, viewers int) (cpuMs, perPacketUs, rssMiB float64) {
	if viewers == 0 {
		return 0, 0, 0
	}
	net := math.Max(0, w.rate("process_cpu_seconds_total")-before.rate("process_cpu_seconds_total"))
	cpuMs = round3(net * 1000 / float64(viewers))
	if pps := w.rate("sluice_packets_out_total") - before.rate("sluice_packets_out_total"); pps > 0 {
		perPacketUs = round2(net * 1e6 / pps)
	}
	rssMiB = round3((w.m1["process_resident_memory_bytes"] - before.m1["process_resident_memory_bytes"]) / (1 << 20) / float64(viewers))
	return cpuMs, perPacketUs, rssMiB
}

// loadTokens mints publish and subscribe tokens when an API key is given (key mode).
func loadTokens(o Options, room string) (pub, sub string, err error) {
	if o.APIKey == "" {
		return "", "", nil
	}
	exp := time.Now().Add(24 * time.Hour).Unix()
	pub, err = auth.Sign(o.APIKey, o.APISecret, auth.Claims{Identity: "loadtest-publisher", ExpiresAt: exp, Grants: auth.Grants{Room: room, Publish: true}})
	if err != nil {
		return "", "", err
	}
	sub, err = auth.Sign(o.APIKey, o.APISecret, auth.Claims{ExpiresAt: exp, Grants: auth.Grants{Room: room, Subscribe: true}})
	return pub, sub, err
}

// subscriberToken mints a subscribe token naming one subscriber (key mode).
func subscriberToken(o Options, room, identity string) (string, error) {
	exp := time.Now().Add(24 * time.Hour).Unix()
	return auth.Sign(o.APIKey, o.APISecret, auth.Claims{Identity: identity, ExpiresAt: exp, Grants: auth.Grants{Room: room, Subscribe: true}})
}

// metricsToken mints the admin token /metrics asks for in key mode ("" in open mode).
func metricsToken(o Options) (string, error) {
	if o.APIKey == "" {
		return "", nil
	}
	exp := time.Now().Add(24 * time.Hour).Unix()
	return auth.Sign(o.APIKey, o.APISecret, auth.Claims{ExpiresAt: exp, Grants: auth.Grants{Admin: true}})
}

// scrape reads the daemon's Prometheus metrics (unlabelled samples, summed over labels).
func scrape(ctx context.Context, base, token string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
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

// Print writes the report for humans.
func (r *Report) Print(w io.Writer) {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	if r.Subscribers > 0 {
		t.row("subscribers", fmt.Sprintf("%d connected, %d failed, %d refused, %d shed (of %d)", r.Connected, r.Failed, r.Refused, r.Shed, r.Subscribers))
		if r.FirstError != "" {
			t.row("first error", r.FirstError)
		}
		t.row("setup", fmt.Sprintf("p50 %.0f ms, p95 %.0f ms (offer to first video packet; p50 answer %.0f ms, connected %.0f ms)",
			r.SetupP50Ms, r.SetupP95Ms, r.AnsweredP50Ms, r.ConnectedP50Ms))
		t.row("received", fmt.Sprintf("%.0f kbit/s per subscriber, loss %.3f %%, jitter %.2f ms (those not shed)", r.BitrateKbps, r.LossPct, r.JitterMs))
		if r.ReceiveOffload {
			t.row("viewer sockets", fmt.Sprintf("%d of %d read with UDP receive offload (--receive-offload; the rest share one pion stack)", r.GRO, r.Subscribers))
		} else {
			t.row("viewer sockets", "stock: one pion stack, a socket per viewer read a packet at a time (as browsers read)")
		}
		if r.SocketDrops != nil {
			t.row("socket drops", fmt.Sprintf("%d packets dropped by the kernel at the viewers' full sockets (in the loss above); %d UDP RcvbufErrors on this machine",
				*r.SocketDrops, *r.RcvbufErrors))
		}
		t.row("cost", fmt.Sprintf("%.3f ms CPU per second per subscriber, %.2f µs per RTP packet sent, %.2f MiB per subscriber",
			r.CPUPerSubMs, r.CPUPerPacketUs, r.RSSPerSubMiB))
		t.row("window", fmt.Sprintf("%.1f s", r.WindowSeconds))
		if r.Overload != nil {
			r.Overload.print(t)
		}
	}
	if rr := r.RTSP; rr != nil {
		t.row("rtsp readers", fmt.Sprintf("%d connected, %d failed (of %d), %s over TCP", rr.Connected, rr.Failed, rr.Readers, rr.URL))
		if rr.FirstError != "" {
			t.row("rtsp first error", rr.FirstError)
		}
		t.row("rtsp setup", fmt.Sprintf("p50 %.0f ms, p95 %.0f ms (connection to first video packet)", rr.SetupP50Ms, rr.SetupP95Ms))
		t.row("rtsp received", fmt.Sprintf("%.0f kbit/s per reader, loss %.3f %%, jitter %.2f ms", rr.BitrateKbps, rr.LossPct, rr.JitterMs))
		t.row("rtsp cost", fmt.Sprintf("%.3f ms CPU per second per reader, %.2f µs per RTP packet sent, %.2f MiB per reader",
			rr.CPUPerReaderMs, rr.CPUPerPacketUs, rr.RSSPerReaderMiB))
		t.row("rtsp window", fmt.Sprintf("%.1f s", rr.WindowSeconds))
	}
	t.row("daemon CPU", fmt.Sprintf("%.3f cores with every viewer (publisher alone %.3f)", r.Cores, r.BaselineCores))
	t.row("daemon memory", fmt.Sprintf("%.1f MiB RSS (idle %.1f MiB)", r.RSSMiB, r.IdleRSSMiB))
	t.row("packets sent", fmt.Sprintf("%.0f per second; dropped in the daemon: %.0f in viewers' queues, %.0f in the WebRTC send queue",
		r.PacketsPerSec, r.DroppedInDaemon, r.SendDropped))
	_ = t.tw.Flush()
}

// table aligns the report's rows in columns.
type table struct{ tw *tabwriter.Writer }

func (t *table) row(cols ...string) { fmt.Fprintln(t.tw, strings.Join(cols, "\t")) }
