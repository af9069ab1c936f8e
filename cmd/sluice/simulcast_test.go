package main

import (
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu/sfutest"
)

// shapedLink is a veth pair between this namespace and a new network namespace; shape limits
// what this side sends into it with tc's token bucket filter (sch_tbf; sch_netem is missing on
// this project's VMs).
type shapedLink struct {
	ns, hostIP, hostDev string
	run                 func(name string, args ...string) error
}

// newShapedLink makes the link; it needs root (network namespaces, veth, qdiscs), ip and tc.
// Under CI=true a missing piece fails the test, elsewhere it skips.
func newShapedLink(t *testing.T) *shapedLink {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the shaped-link test needs root (network namespaces)")
		}
		t.Skip("the shaped-link test needs root (network namespaces)")
	}
	ip := sfutest.RequireTool(t, "ip")
	sfutest.RequireTool(t, "tc")
	id := os.Getpid() % 50000
	l := &shapedLink{ns: fmt.Sprintf("sluice-sim-%d", id), hostIP: fmt.Sprintf("10.%d.%d.1", 150+id/10000%50, id%250), hostDev: fmt.Sprintf("vm%dh", id)}
	nsDev := fmt.Sprintf("vm%dn", id)
	nsIP := strings.TrimSuffix(l.hostIP, ".1") + ".2"
	l.run = func(name string, args ...string) error {
		out, err := exec.Command(name, args...).CombinedOutput() //nolint:gosec // the test's own tools
		if err != nil {
			return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
		}
		return nil
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(l.run(ip, "netns", "add", l.ns))
	t.Cleanup(func() {
		_ = l.run(ip, "link", "del", l.hostDev)
		_ = l.run(ip, "netns", "del", l.ns)
	})
	must(l.run(ip, "link", "add", l.hostDev, "type", "veth", "peer", "name", nsDev, "netns", l.ns))
	must(l.run(ip, "addr", "add", l.hostIP+"/30", "dev", l.hostDev))
	must(l.run(ip, "link", "set", l.hostDev, "up"))
	must(l.run(ip, "-n", l.ns, "addr", "add", nsIP+"/30", "dev", nsDev))
	must(l.run(ip, "-n", l.ns, "link", "set", nsDev, "up"))
	must(l.run(ip, "-n", l.ns, "link", "set", "lo", "up"))
	return l
}

// shape limits the link towards the namespace to rate (tc syntax, "400kbit"); "" lifts it.
func (l *shapedLink) shape(t *testing.T, rate string) {
	t.Helper()
	if rate == "" {
		if err := l.run("tc", "qdisc", "del", "dev", l.hostDev, "root"); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := l.run("tc", "qdisc", "replace", "dev", l.hostDev, "root", "tbf", "rate", rate, "burst", "16kbit", "latency", "200ms"); err != nil {
		t.Fatal(err)
	}
}

// Chromium publishes three simulcast layers over WHIP; two Chromiums play them over WHEP, one of
// them in a network namespace whose link carries 400 kbit/s. The shaped one gets the low layer,
// the other the top one and never stops painting for more than 2 s; once the shaping is lifted
// the shaped one climbs back within 10 s. Not asserted yet, only logged: how much of the shaped
// stretch the shaped viewer spends on the low layer (its estimate probes the next layer every
// few seconds and a failed probe can freeze it for seconds: issue 16, not met).
func TestChromiumSimulcastWHEP(t *testing.T) {
	requireChromium(t)
	l := newShapedLink(t)
	d := startDaemon(t, fmt.Sprintf("webrtc: { port: 0, bind_ip: %s }\n", l.hostIP))
	target, _ := url.Parse(d.URL)
	// The namespace reaches this side's veth address only: the page server is there, and passes
	// WHIP and WHEP on to the daemon.
	ps := newPageServerAt(t, l.hostIP+":0", func(mux *http.ServeMux) {
		proxy := http.StripPrefix("/sluice", httputil.NewSingleHostReverseProxy(target))
		for _, m := range []string{"POST", "PATCH", "DELETE"} {
			mux.Handle(m+" /sluice/", proxy)
		}
	})
	flags := []string{"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.*, EXCLUDE ::1, EXCLUDE [::1], EXCLUDE " + l.hostIP,
		"--unsafely-treat-insecure-origin-as-secure=" + ps.srv.URL} // getUserMedia wants a secure origin
	inNS := []string{"ip", "netns", "exec", l.ns}

	ps.openPageUnder(t, nil, flags, "publish.html", "pub", url.Values{"whip": {ps.srv.URL + "/sluice/whip/sim"}, "simulcast": {"1"}, "host": {l.hostIP}})
	ps.waitReport(t, "pub", "three layers sent", 40*time.Second, func(r map[string]any) bool {
		layers, _ := r["layers"].(map[string]any)
		for _, rid := range []string{"q", "h", "f"} {
			if m, _ := layers[rid].(map[string]any); num(m, "framesSent") < 30 {
				return false
			}
		}
		return r["state"] == "connected"
	})

	l.shape(t, "400kbit")
	play := url.Values{"whep": {ps.srv.URL + "/sluice/whep/sim"}, "host": {l.hostIP}}
	ps.openPageUnder(t, nil, flags, "play.html", "clean", play)
	ps.openPageUnder(t, inNS, flags, "play.html", "shaped", play)
	clean := ps.waitReport(t, "clean", "the top layer", 40*time.Second, func(r map[string]any) bool { return num(r, "frameWidth") > 640 })
	shaped := ps.waitReport(t, "shaped", "the low layer", 40*time.Second, func(r map[string]any) bool {
		return num(r, "frameWidth") > 0 && num(r, "frameWidth") <= 320
	})
	t.Logf("shaped: clean %vx%v, shaped %vx%v", clean["frameWidth"], clean["frameHeight"], shaped["frameWidth"], shaped["frameHeight"])
	// They stay there: the shaped viewer may try the next layer now and then (its estimate has
	// no other way to learn that the link got wider), and falls back.
	low, top := 0, 0
	const samples = 20
	for range samples {
		time.Sleep(500 * time.Millisecond)
		if w := num(ps.report("shaped"), "frameWidth"); w > 0 && w <= 320 {
			low++
		}
		if num(ps.report("clean"), "frameWidth") > 640 {
			top++
		}
	}
	t.Logf("of %d samples, the shaped viewer had the low layer in %d, the clean one the top layer in %d", samples, low, top)
	if top < samples*8/10 {
		t.Errorf("the clean viewer had the top layer in %d of %d samples", top, samples)
	}

	t.Logf("publisher: %v", ps.report("pub")["layers"])
	l.shape(t, "")
	lifted := time.Now()
	ps.waitReport(t, "shaped", "the top layer after the shaping is lifted", 11*time.Second, func(r map[string]any) bool { return num(r, "frameWidth") > 640 })
	t.Logf("climbed back in %v", time.Since(lifted).Round(100*time.Millisecond))
	time.Sleep(2 * time.Second)
	for _, id := range []string{"clean", "shaped"} {
		r := ps.report(id)
		t.Logf("%s: %v frames painted, longest gap %v ms, %v packets lost", id, r["painted"], r["maxGap"], r["videoPacketsLost"])
	}
	if gap := num(ps.report("clean"), "maxGap"); gap > 2000 {
		t.Errorf("clean viewer: no frame painted for %v ms", gap)
	}
}
