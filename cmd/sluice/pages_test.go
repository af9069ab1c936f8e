package main

import (
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/sfutest"
	"github.com/sluice-media/sluice/web"
)

// The built-in pages, served from another origin (the test's page server mounts the same
// handler) against a daemon in key mode with their tokens in the URL fragment: in headless
// Chromium /r/<room>/publish publishes the fake camera and microphone over WHIP, /r/<room>
// plays them over WHEP and paints the frames, and / lists the room and its publisher.
func TestChromiumBuiltInPages(t *testing.T) {
	requireChromium(t)
	ps := newPageServer(t, func(mux *http.ServeMux) { web.Register(mux) })
	// the page server's origin may call the API (the room list)
	t.Setenv("SLUICE_HTTP_ALLOWED_ORIGINS", ps.srv.URL)
	const key, secret = "pagekey", "page-test-secret-0123456789abcdef"
	d := startDaemon(t, fmt.Sprintf("auth: { keys: { %s: %q } }\n", key, secret))
	frag := func(grants auth.Grants, extra ...string) string {
		v := url.Values{"server": {d.URL}, "token": {signToken(t, key, secret, grants)}}
		for i := 0; i+1 < len(extra); i += 2 {
			v.Set(extra[i], extra[i+1])
		}
		return "#" + v.Encode()
	}

	ps.openPage(t, "frame.html", "pub", url.Values{"src": {"/r/pages/publish" + frag(auth.Grants{Room: "pages", Publish: true}, "start", "1", "vcodec", "H264")}})
	pub := ps.waitReport(t, "pub", "frames sent", 30*time.Second, func(r map[string]any) bool {
		return r["state"] == "connected" && num(r, "framesSent") > 30 && num(r, "audioPacketsSent") > 20
	})
	if pub["videoCodec"] != "H264" {
		t.Errorf("the publish page sends %v; the codec chosen was H264", pub["videoCodec"])
	}

	ps.openPage(t, "frame.html", "view", url.Values{"src": {"/r/pages" + frag(auth.Grants{Room: "pages", Subscribe: true})}})
	first := ps.waitReport(t, "view", "painted frames", 30*time.Second, func(r map[string]any) bool {
		return r["mode"] == "whep" && num(r, "painted") > 30 && num(r, "width") > 0
	})
	time.Sleep(2 * time.Second)
	later := ps.report("view")
	if num(later, "painted") <= num(first, "painted") {
		t.Fatalf("the player stopped painting: %v then %v", first["painted"], later["painted"])
	}
	t.Logf("player: %v %vx%v, %v painted, audio %v", later["videoCodec"], later["width"], later["height"], later["painted"], later["audioCodec"])
	ps.closePage(t, "view") // two browsers at a time

	// the player's HLS path (its fallback), with the embedded hls.js
	ps.openPage(t, "frame.html", "viewhls", url.Values{"src": {"/r/pages" + frag(auth.Grants{Room: "pages", Subscribe: true}, "mode", "hls")}})
	hls := ps.waitReport(t, "viewhls", "painted frames over HLS", 40*time.Second, func(r map[string]any) bool {
		return r["mode"] == "hls.js" && num(r, "painted") > 30 && num(r, "width") > 0
	})
	t.Logf("player over HLS: %v %v %vx%v, %v painted, latency %v s", hls["videoCodec"], hls["audioCodec"], hls["width"], hls["height"], hls["painted"], hls["latency"])
	ps.closePage(t, "viewhls")

	// the browser's Opus passes through to HLS players that take it, and is converted to AAC
	// by the transcoder for those that need it
	sub := signToken(t, key, secret, auth.Grants{Room: "pages", Subscribe: true})
	for query, want := range map[string]string{"": "h264,opus", "&audio=aac": "aac,h264"} {
		if got := probeCodecs(t, d.URL+"/hls/pages/index.m3u8?access_token="+sub+query); got != want {
			t.Errorf("HLS%s: codecs %s, want %s", query, got, want)
		}
	}

	ps.openPage(t, "frame.html", "index", url.Values{"src": {"/" + frag(auth.Grants{Admin: true})}})
	idx := ps.waitReport(t, "index", "the room listed", 30*time.Second, func(r map[string]any) bool {
		rooms, _ := r["rooms"].([]any)
		for _, x := range rooms {
			room, _ := x.(map[string]any)
			ids, _ := room["participants"].([]any)
			if room["name"] == "pages" && len(ids) > 0 {
				return true
			}
		}
		return false
	})
	if idx["live"] != true {
		t.Errorf("the room list does not follow the event stream: %v", idx)
	}
	// live: a second publisher appears without a reload
	ps.closePage(t, "pub")
	ps.openPage(t, "frame.html", "pub2", url.Values{"src": {"/r/other/publish" + frag(auth.Grants{Room: "other", Publish: true}, "start", "1")}})
	ps.waitReport(t, "index", "the second room listed", 30*time.Second, func(r map[string]any) bool {
		rooms, _ := r["rooms"].([]any)
		return slices.ContainsFunc(rooms, func(x any) bool { m, _ := x.(map[string]any); return m["name"] == "other" })
	})
}

// probeCodecs returns the codecs ffprobe finds in a media URL, sorted, each once, comma-separated.
func probeCodecs(t *testing.T, u string) string {
	t.Helper()
	bin := sfutest.RequireTool(t, "ffprobe")
	out, err := exec.Command(bin, "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", u).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", strings.Split(u, "?")[0], err)
	}
	codecs := strings.Fields(string(out))
	slices.Sort(codecs)
	return strings.Join(slices.Compact(codecs), ",") // HLS streams are listed under their program too
}
