package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/recorder"
	"github.com/sluice-media/sluice/recorder/rectest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/rtc"
	"github.com/sluice-media/sluice/sfu/sfutest"
	"github.com/sluice-media/sluice/webhooks"
)

// fillTo writes path until the file system of dir has at most free bytes left.
func fillTo(t *testing.T, dir, path string, free int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if excess := int64(st.Bavail)*st.Bsize - free; excess > 0 {
		if _, err := f.Write(make([]byte, excess)); err != nil {
			t.Fatal(err)
		}
	}
}

// The disk of the recordings and of the event log fills up (a real tmpfs as the data dir):
// the recording fails with disk_full and its recording.failed reaches the webhook receiver at
// once (recordings leave recording.min_free_mb to the log), its fragments written so far play,
// a viewer of the room is untouched, the log stays quiet, and once space is freed a new
// recording and its events work without a restart.
func TestDiskFullRecordingAndEventLog(t *testing.T) {
	disk := sfutest.MountTmpfs(t, "160m")
	secret := webhooks.NewSecret()
	rxAddr := fmt.Sprintf("127.0.0.1:%d", sfutest.FreeTCPPort(t))
	rx := newHookReceiver(secret)
	rx.listen(t, rxAddr)
	d := startDaemonOn(t, disk, fmt.Sprintf(`recording: { min_free_mb: 24, fragment_duration: 500ms }
webhooks:
  endpoints: [{id: rx, url: "http://%s/hook", secret: %q}]
  retry_schedule: [200ms, 500ms]
`, rxAddr, secret))
	video, audio := rectest.H264Opus(t, 31, 0)
	stop := rectest.WHIPPublish(t, d.URL+"/whip/cam", 30*time.Second, video, audio)
	defer stop()
	d.waitPublisher(t, "cam", 2)
	viewer := newSeqViewer(t, d.URL+"/whep/cam")
	out, err := d.cli("record", "start", "--room", "cam", "-o", "json")
	if err != nil {
		t.Fatalf("record start: %v\n%s", err, out)
	}
	id := startedRecording(t, out)
	d.waitRecording(t, id, 15*time.Second, func(r recorder.Recording) bool {
		return r.Status == recorder.StatusActive && len(r.Files) == 1 && r.Files[0].SizeBytes > 0
	})
	time.Sleep(2 * time.Second) // a few fragments
	logsBefore := strings.Count(d.logs.String(), "\n")
	// leave the reserve and 100 KiB: the recording reaches the reserve within seconds
	filler := filepath.Join(disk, "filler")
	fillTo(t, disk, filler, 24<<20+100<<10)
	faultAt := time.Now()
	var failed sfu.Event
	sfutest.WaitFor(t, "recording.failed at the webhook receiver", 30*time.Second, func() bool {
		rx.mu.Lock()
		defer rx.mu.Unlock()
		for _, ev := range rx.events {
			if ev.Type == sfu.EventRecordingFailed && ev.Recording != nil && ev.Recording.ID == id {
				failed = ev
				return true
			}
		}
		return false
	})
	t.Logf("recording.failed delivered %v after the disk filled: %+v", time.Since(faultAt).Round(time.Millisecond), failed.Error)
	if failed.Error == nil || failed.Error.Code != recorder.CodeDiskFull {
		t.Errorf("recording.failed error %+v, want disk_full", failed.Error)
	}
	r := d.recordingOf(t, id)
	if len(r.Files) != 1 || r.Files[0].SizeBytes == 0 {
		t.Fatalf("failed recording lists %+v", r.Files)
	}
	rectest.Verify(t, filepath.Join(d.recordingsDir(), filepath.FromSlash(r.Files[0].Path)), 0, "h264", "opus")

	// the viewer is untouched: its stream goes on, without a gap
	seen := viewer.count()
	sfutest.WaitFor(t, "the viewer to go on receiving", 10*time.Second, func() bool { return viewer.count() > seen+50 })
	if j := viewer.jumps(); j != 0 {
		t.Errorf("the viewer's video has %d sequence jumps", j)
	}
	time.Sleep(3 * time.Second) // what the daemon logs while the disk stays full
	lines := strings.Count(d.logs.String(), "\n") - logsBefore
	perMinute := float64(lines) / time.Since(faultAt).Minutes()
	// the test daemon logs at debug: count what an operator would see
	info := 0
	for _, l := range strings.Split(d.logs.String(), "\n")[logsBefore:] {
		if !strings.Contains(l, "level=DEBUG") {
			info++
		}
	}
	t.Logf("%d log lines (%d above debug) in the %v since the fault", lines, info, time.Since(faultAt).Round(time.Second))
	if infoPerMinute := float64(info) / time.Since(faultAt).Minutes(); infoPerMinute > 100 {
		t.Errorf("%.0f log lines a minute above debug while the disk is full (%.0f in all)", infoPerMinute, perMinute)
	}

	// space comes back: a new recording works, and its events reach the receiver
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	out, err = d.cli("record", "start", "--room", "cam", "-o", "json")
	if err != nil {
		t.Fatalf("record start after space came back: %v\n%s", err, out)
	}
	next := startedRecording(t, out)
	d.waitRecording(t, next, 15*time.Second, func(r recorder.Recording) bool {
		return r.Status == recorder.StatusActive && len(r.Files) == 1 && r.Files[0].SizeBytes > 0
	})
	sfutest.WaitFor(t, "the new recording's recording.started at the receiver", 20*time.Second, func() bool {
		rx.mu.Lock()
		defer rx.mu.Unlock()
		for _, ev := range rx.events {
			if ev.Type == sfu.EventRecordingStarted && ev.Recording != nil && ev.Recording.ID == next {
				return true
			}
		}
		return false
	})
}

// seqViewer is a WHEP viewer that keeps its video sequence numbers.
type seqViewer struct {
	mu     sync.Mutex
	seqs   []uint16
	frames int // video packets with the marker bit: the last of a frame
}

func newSeqViewer(t *testing.T, endpoint string) *seqViewer {
	t.Helper()
	v, err := dialSeqViewer(t, endpoint)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// dialSeqViewer is newSeqViewer that returns the endpoint's refusal (an *rtc.StatusError).
func dialSeqViewer(t *testing.T, endpoint string) (*seqViewer, error) {
	t.Helper()
	pc, err := newViewerAPI(t).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	v := &seqViewer{}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for {
			pkt, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			if tr.Kind() == webrtc.RTPCodecTypeVideo {
				v.mu.Lock()
				v.seqs = append(v.seqs, pkt.SequenceNumber)
				if pkt.Marker {
					v.frames++
				}
				v.mu.Unlock()
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := rtc.Negotiate(ctx, endpoint, "", pc); err != nil {
		_ = pc.Close()
		return nil, err
	}
	return v, nil
}

func (v *seqViewer) count() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.seqs)
}

// frameCount returns how many video frames arrived.
func (v *seqViewer) frameCount() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.frames
}

// jumps counts video packets whose sequence number is not the previous one plus one.
func (v *seqViewer) jumps() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return sfutest.SeqJumps(v.seqs)
}
