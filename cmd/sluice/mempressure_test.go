package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/recorder"
	"github.com/sluice-media/sluice/recorder/rectest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/rtc"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// memoryCgroupLimit is the memory cgroup limit of the daemon under memory pressure: a few
// times its idle footprint, so that some tens of viewers reach the high-water mark.
const memoryCgroupLimit = 64 << 20

// The daemon runs in a memory cgroup with a small limit (a real cgroup v1 memory controller)
// and is ramped with WHEP viewers of two recorded WHIP publishers until its memory passes the
// high-water mark (limits.memory_high of the budget, which it takes from the cgroup): new
// viewers, publishers (WHIP, RTMP) and recordings are refused with 503 overloaded or an RTMP
// refusal and auth.failed reason overloaded; the viewers admitted before go on receiving every
// packet, the kernel's OOM killer never acts, and the recordings end complete and playable.
func TestMemoryPressure(t *testing.T) {
	cg := sfutest.NewMemoryCgroup(t, memoryCgroupLimit)
	sfutest.RequireTool(t, "ffmpeg")
	d := startDaemonOn(t, t.TempDir(), "limits: { cpu_budget: 1, shed: false }\n", cg.Prefix()...)
	if !strings.Contains(d.logs.String(), fmt.Sprintf("budget_mb=%d cgroup=true", memoryCgroupLimit>>20)) {
		t.Fatalf("the daemon did not take its budget from the cgroup:\n%s", tail(d.logs.String(), 30))
	}
	video, audio := rectest.H264Opus(t, 31, 0)
	rooms := []string{"a", "b"}
	var recs []string
	for _, room := range rooms {
		stop := rectest.WHIPPublishFor(t, d.URL+"/whip/"+room, 5*time.Minute, video, audio)
		defer stop()
		d.waitPublisher(t, room, 2)
		out, err := d.cli("record", "start", "--room", room, "-o", "json")
		if err != nil {
			t.Fatalf("record start: %v\n%s", err, out)
		}
		recs = append(recs, startedRecording(t, out))
	}
	var early []*seqViewer
	for i := range 4 {
		early = append(early, newSeqViewer(t, d.URL+"/whep/"+rooms[i%2]))
	}

	// ramp until refused
	var refusal *rtc.StatusError
	admitted := len(early)
	for i := 0; refusal == nil; i++ {
		if i == 400 {
			used, budget := d.memory(t)
			t.Fatalf("%d viewers admitted and no refusal (memory %d of %d MiB)", admitted, used>>20, budget>>20)
		}
		_, err := dialSeqViewer(t, d.URL+"/whep/"+rooms[i%2])
		switch {
		case err == nil:
			admitted++
		case errors.As(err, &refusal):
		default:
			t.Fatalf("viewer %d: %v", i, err)
		}
		if i%10 == 0 {
			used, budget := d.memory(t)
			now, peak := cg.Usage()
			t.Logf("%d viewers: daemon memory %d of %d MiB; cgroup %d MiB (peak %d)", admitted, used>>20, budget>>20, now>>20, peak>>20)
			time.Sleep(time.Second) // media flowing to the new viewers is what grows the daemon
		}
	}
	used, budget := d.memory(t)
	t.Logf("refused after %d viewers at %d of %d MiB: %s %s", admitted, used>>20, budget>>20, refusal.StatusText, refusal.Body)
	if refusal.Status != http.StatusServiceUnavailable || !strings.Contains(refusal.Body, `"overloaded"`) || !strings.Contains(refusal.Body, "memory") {
		t.Errorf("the refusal is %s %s, want 503 overloaded naming memory", refusal.StatusText, refusal.Body)
	}

	// new publishers and recordings are refused too
	if _, err := dialWHIP(t, d.URL+"/whip/c"); err == nil || !strings.Contains(err.Error(), "overloaded") {
		t.Errorf("a new WHIP publisher: %v, want 503 overloaded", err)
	}
	rtmp := exec.Command(sfutest.RequireTool(t, "ffmpeg"), "-hide_banner", "-loglevel", "error", "-re", //nolint:gosec // the test's tool
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-t", "5", "-c:v", "libx264", "-g", "30",
		"-f", "flv", fmt.Sprintf("rtmp://127.0.0.1:%d/live/c", d.RTMPPort))
	if out, err := rtmp.CombinedOutput(); err == nil {
		t.Errorf("an RTMP publish was admitted over the memory mark:\n%s", out)
	}
	if out, err := d.cli("record", "start", "--room", "a", "-o", "json"); err == nil || !strings.Contains(out, "overloaded") {
		t.Errorf("record start over the memory mark: %v\n%s", err, out)
	}

	// the viewers admitted before keep receiving (60 more video frames, 2 s of it), without
	// losing a packet
	for i, v := range early {
		seen := v.frameCount()
		sfutest.WaitFor(t, fmt.Sprintf("early viewer %d to go on receiving", i), 20*time.Second, func() bool { return v.frameCount() >= seen+60 })
	}
	for i, v := range early {
		if j := v.jumps(); j != 0 {
			t.Errorf("early viewer %d: %d sequence jumps", i, j)
		}
	}

	if n := cg.OOMKills(); n != 0 {
		t.Fatalf("the OOM killer ended %d processes", n)
	}
	select {
	case <-d.exited:
		t.Fatalf("the daemon exited:\n%s", tail(d.logs.String(), 30))
	default:
	}
	now, peak := cg.Usage()
	t.Logf("cgroup memory %d MiB, peak %d MiB of %d MiB; the OOM killer never acted", now>>20, peak>>20, memoryCgroupLimit>>20)

	// the recordings end complete, and the refusals are events
	for _, id := range recs {
		if out, err := d.cli("record", "stop", id); err != nil {
			t.Fatalf("record stop: %v\n%s", err, out)
		}
		r := d.waitRecording(t, id, 20*time.Second, func(r recorder.Recording) bool { return r.Status == recorder.StatusComplete })
		for _, f := range r.Files {
			rectest.Verify(t, filepath.Join(d.recordingsDir(), filepath.FromSlash(f.Path)), 0, "h264", "opus")
		}
	}
	refused := map[string]int{} // by protocol (participant kind)
	ended := 0
	for _, e := range d.loggedEvents() {
		switch {
		case e.Type == sfu.EventAuthFailed && e.Reason == sfu.ReasonOverloaded && e.Error != nil && e.Error.Code == "memory":
			refused[e.Protocol]++
		case e.Type == sfu.EventRecordingEnded:
			ended++
		}
	}
	for _, kind := range []string{sfu.ParticipantWebRTC, sfu.ParticipantWHIP, sfu.ParticipantRTMP, "recording"} {
		if refused[kind] == 0 {
			t.Errorf("no auth.failed (reason overloaded, error memory) for a %s session; got %v", kind, refused)
		}
	}
	if ended != len(recs) {
		t.Errorf("%d recording.ended, want %d", ended, len(recs))
	}
}

// memory reads the daemon's memory use and budget from /metrics.
func (d *daemonProc) memory(t *testing.T) (used, budget uint64) {
	t.Helper()
	resp, err := http.Get(d.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		name, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		f, _ := strconv.ParseFloat(v, 64)
		switch name {
		case "sluice_memory_used_bytes":
			used = uint64(f)
		case "sluice_memory_budget_bytes":
			budget = uint64(f)
		}
	}
	return used, budget
}

// dialWHIP offers to publish video over WHIP to endpoint and returns the endpoint's answer:
// the session's closer, or its refusal.
func dialWHIP(t *testing.T, endpoint string) (func(), error) {
	t.Helper()
	pc, err := newViewerAPI(t).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := rtc.Negotiate(ctx, endpoint, "", pc); err != nil {
		_ = pc.Close()
		return nil, err
	}
	return func() { _ = pc.Close() }, nil
}
