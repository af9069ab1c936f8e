package main

import (
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu/sfutest"
)

// Chromium publishes three simulcast layers over WHIP; two Chromiums play them over WHEP, one of
// them in a network namespace whose link carries 400 kbit/s. The shaped one gets the low layer,
// the other the top one and never stops painting for more than 2 s; once the shaping is lifted
// the shaped one climbs back within 10 s. Not asserted yet, only logged: how much of the shaped
// stretch the shaped viewer spends on the low layer (its estimate probes the next layer every
// few seconds and a failed probe can freeze it for seconds: issue 16, not met).
func TestChromiumSimulcastWHEP(t *testing.T) {
	requireChromium(t)
	l := sfutest.NewNamespace(t)
	d := startDaemon(t, fmt.Sprintf("webrtc: { port: 0, bind_ip: %s }\n", l.HostIP))
	target, _ := url.Parse(d.URL)
	// The namespace reaches this side's veth address only: the page server is there, and passes
	// WHIP and WHEP on to the daemon.
	ps := newPageServerAt(t, l.HostIP+":0", func(mux *http.ServeMux) {
		proxy := http.StripPrefix("/sluice", httputil.NewSingleHostReverseProxy(target))
		for _, m := range []string{"POST", "PATCH", "DELETE"} {
			mux.Handle(m+" /sluice/", proxy)
		}
	})
	flags := []string{"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.*, EXCLUDE ::1, EXCLUDE [::1], EXCLUDE " + l.HostIP,
		"--unsafely-treat-insecure-origin-as-secure=" + ps.srv.URL} // getUserMedia wants a secure origin
	inNS := []string{"ip", "netns", "exec", l.Name}

	ps.openPageUnder(t, nil, flags, "publish.html", "pub", url.Values{"whip": {ps.srv.URL + "/sluice/whip/sim"}, "simulcast": {"1"}, "host": {l.HostIP}})
	ps.waitReport(t, "pub", "three layers sent", 40*time.Second, func(r map[string]any) bool {
		layers, _ := r["layers"].(map[string]any)
		for _, rid := range []string{"q", "h", "f"} {
			if m, _ := layers[rid].(map[string]any); num(m, "framesSent") < 30 {
				return false
			}
		}
		return r["state"] == "connected"
	})

	l.Shape(t, "400kbit")
	play := url.Values{"whep": {ps.srv.URL + "/sluice/whep/sim"}, "host": {l.HostIP}}
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
	// Under the whole suite's load the clean viewer's estimate also steps down now and then
	// (NACKs from a starved browser undo a step up): most of the time on top is what is asserted.
	if top < samples/2 {
		t.Errorf("the clean viewer had the top layer in %d of %d samples", top, samples)
	}

	t.Logf("publisher: %v", ps.report("pub")["layers"])
	l.Shape(t, "")
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
