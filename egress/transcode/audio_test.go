package transcode

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pion/transport/v4/test"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// wallOf maps an RTP timestamp to wall-clock time through a sender report.
func wallOf(sr sfu.SenderReport, ts uint32, rate uint32) time.Time {
	return sr.NTPTime.Add(time.Duration(int64(int32(ts-sr.RTPTime))) * time.Second / time.Duration(rate))
}

// AAC at 44.1 kHz becomes Opus that decodes, and its timestamps stay on the source's clock: the
// tone onsets of the decoded Opus fall where the source's are, through both sender reports.
func TestAACToOpus(t *testing.T) {
	t.Cleanup(test.CheckRoutines(t)) // runs after the other cleanups
	var logs sfutest.Buffer
	h, _ := newHub(t)
	m := newManager(t, newTestLogger(&logs), nil)
	adts := toneADTS(t, 44100, 4)
	src := startAACSource(t, h, "room", "obs", adts)

	out, release, err := m.Transcode(src.track, sfu.CodecOpus)
	if err != nil {
		t.Fatal(err)
	}
	if c := out.Codec(); c.Name != sfu.CodecOpus || c.ClockRate != 48000 || out.DerivedFrom() != src.track {
		t.Fatalf("derived track %+v", c)
	}
	got := &packetLog{}
	sub, err := out.Subscribe(got, sfu.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// 3.5 s of Opus: the source's first three onsets and more.
	sfutest.WaitFor(t, "3.5 s of Opus", 20*time.Second, func() bool { return got.count() >= 175 })
	sub.Close()
	release()
	src.close()

	pkts, _ := got.snapshot()
	var payloads [][]byte
	for i, p := range pkts {
		payloads = append(payloads, p.Payload)
		if i > 0 {
			if p.Header.SequenceNumber != pkts[i-1].Header.SequenceNumber+1 {
				t.Fatalf("sequence jumps from %d to %d", pkts[i-1].Header.SequenceNumber, p.Header.SequenceNumber)
			}
			if d := p.Header.Timestamp - pkts[i-1].Header.Timestamp; d != 960 {
				t.Fatalf("packet %d: timestamp step %d, want 960 (20 ms)", i, d)
			}
		}
	}
	ogg := filepath.Join(t.TempDir(), "out.ogg")
	if err := writeOggOpus(ogg, payloads, 2); err != nil {
		t.Fatal(err)
	}
	pcm := decodeMono(t, ogg)
	if want := len(pkts) * 960; len(pcm) < want*95/100 {
		t.Fatalf("decoded %d samples from %d packets, want about %d", len(pcm), len(pkts), want)
	}

	srcSR, _ := src.track.SenderReport()
	outSR, ok := out.SenderReport()
	if !ok {
		t.Fatal("the derived track has no sender report")
	}
	srcPCM := decodeMono(t, adts) // resampled to 48 kHz: sample i is source time i/48000
	want := onsets(srcPCM)
	have := onsets(pcm)
	if len(want) < 3 || len(have) < 3 {
		t.Fatalf("onsets: source %v, transcoded %v", want, have)
	}
	first := pkts[0].Header.Timestamp
	for i := range 3 {
		srcTS := src.base + uint32(int64(want[i])*44100/48000)
		outTS := first + uint32(have[i])
		d := wallOf(outSR, outTS, 48000).Sub(wallOf(srcSR, srcTS, 44100))
		t.Logf("onset %d: transcoded audio is %v from the source", i, d)
		if d < -100*time.Millisecond || d > 100*time.Millisecond {
			t.Errorf("onset %d is %v off the source (limit 100 ms)", i, d)
		}
	}
}

// A process that takes input but writes nothing is killed after the stall timeout and restarted.
func TestStalledProcessIsKilled(t *testing.T) {
	t.Cleanup(test.CheckRoutines(t))
	stuck := filepath.Join(t.TempDir(), "stuck-ffmpeg")
	if err := os.WriteFile(stuck, []byte("#!/bin/sh\nexec cat >/dev/null\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	var logs sfutest.Buffer
	h, _ := newHub(t)
	m := newManager(t, newTestLogger(&logs), func(o *Options) {
		o.Config.FFmpeg = stuck
		o.StallTimeout = time.Second
	})
	src := startAACSource(t, h, "room", "obs", toneADTS(t, 48000, 2))
	out, release, err := m.Transcode(src.track, sfu.CodecOpus)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	sfutest.WaitFor(t, "two stalls", 20*time.Second, func() bool { return m.restarts.Load() >= 2 })
	if !strings.Contains(logs.String(), "ffmpeg stalled: no output for 1s while input flowed; killed") {
		t.Fatalf("no log line for the stall:\n%s", logs.String())
	}
	if out.Closed() {
		t.Fatal("the derived track ended on a stall; it should wait for the restart")
	}
}

// Status and metrics show what runs and what it costs.
func TestStatusAndMetrics(t *testing.T) {
	t.Cleanup(test.CheckRoutines(t))
	h, _ := newHub(t)
	m := newManager(t, nil, nil)
	src := startAACSource(t, h, "room", "obs", toneADTS(t, 48000, 2))
	out, release, err := m.Transcode(src.track, sfu.CodecOpus)
	if err != nil {
		t.Fatal(err)
	}
	out2, release2, err := m.Transcode(src.track, sfu.CodecOpus)
	if err != nil || out2 != out {
		t.Fatalf("a second reader of the same conversion got %v, %v", out2, err)
	}
	if _, _, err := m.Transcode(src.track, sfu.CodecH264); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("aac to H264: %v", err)
	}
	sfutest.WaitFor(t, "CPU figures", 20*time.Second, func() bool { return m.CPU() > 0 })
	st := m.Status()
	if len(st) != 1 || st[0].Readers != 2 || st[0].State != "running" || st[0].Room != "room" || st[0].Participant != "obs" ||
		st[0].SourceTrack != src.track.SID() || st[0].Track != out.SID() || st[0].FramesIn == 0 {
		t.Fatalf("status %+v", st)
	}
	metrics := collect(t, m)
	if metrics["sluice_transcoders"] != 1 || metrics["sluice_transcoder_cpu_seconds_total"] <= 0 {
		t.Fatalf("metrics %v", metrics)
	}
	release()
	release() // a second call of the same release does nothing
	if len(m.Status()) != 1 {
		t.Fatal("the conversion stopped while a reader holds it")
	}
	release2()
	sfutest.WaitFor(t, "the stop", 10*time.Second, func() bool { return len(m.Status()) == 0 })
	if metrics := collect(t, m); metrics["sluice_transcoders"] != 0 || metrics["sluice_transcoder_cpu_seconds_total"] <= 0 {
		t.Fatalf("metrics after the stop %v", metrics)
	}
	<-out.Done()
}

func collect(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 16)
	c.Collect(ch)
	close(ch)
	out := map[string]float64{}
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		desc := m.Desc().String()
		_, name, _ := strings.Cut(desc, `"`)
		name, _, _ = strings.Cut(name, `"`)
		switch {
		case pb.Gauge != nil:
			out[name] = pb.Gauge.GetValue()
		case pb.Counter != nil:
			out[name] = pb.Counter.GetValue()
		}
	}
	return out
}
