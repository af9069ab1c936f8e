package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"

	"github.com/sluice-media/sluice/ingest/rtsp/rtsptest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// rtspChurnPush publishes to url for d, then ends with a TEARDOWN, or with a TCP reset when
// reset is set.
func rtspChurnPush(t *testing.T, url string, d time.Duration, reset bool) error {
	fx := rtsptest.LoadFixtures(t)
	medias := map[string]*description.Media{
		"video": {Type: description.MediaTypeVideo, Formats: []format.Format{&format.H264{PayloadTyp: 96, PacketizationMode: 1, SPS: fx.SPS, PPS: fx.PPS}}},
		"audio": {Type: description.MediaTypeAudio, Formats: []format.Format{&format.G711{PayloadTyp: 0, MULaw: true, SampleRate: 8000, ChannelCount: 1}}},
	}
	var conn net.Conn
	c := &gortsplib.Client{Transport: new(gortsplib.TransportTCP), DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		conn = nc
		return nc, err
	}}
	if err := c.StartRecording(url, &description.Session{Medias: []*description.Media{medias["video"], medias["audio"]}}); err != nil {
		return err
	}
	var paused atomic.Bool
	var sent atomic.Int64
	stop, done := make(chan struct{}), make(chan struct{})
	go rtsptest.FeedMedia(fx, rtsptest.CameraOptions{Inband: true}, medias, &paused, &sent, c.WritePacketRTP, stop, done)
	time.Sleep(d)
	if reset {
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // close sends RST
		}
		_ = conn.Close()
	}
	close(stop)
	<-done
	c.Close()
	return nil
}

// Churn for SLUICE_SOAK (e.g. 10m; `make soak`): RTMP publishes of 3 s, WHIP sessions created
// and DELETEd, RTSP pushes ended half by TEARDOWN and half by a TCP reset, all at once. Then
// the daemon's file descriptors (UDP sockets included) and goroutines return to their
// baseline, and every stream.publishing has exactly one terminal event.
func TestChurnSoak(t *testing.T) {
	soak, err := time.ParseDuration(os.Getenv("SLUICE_SOAK"))
	if err != nil {
		t.Skip("a soak: set SLUICE_SOAK=10m (make soak)")
	}
	sfutest.RequireTool(t, "ffmpeg")
	d := startDaemon(t, "")
	goroutines := func() float64 { return metricSum(t, d.URL, "go_goroutines") }
	baseFDs, baseG := openFDs(t, d), goroutines()
	t.Logf("baseline: %d file descriptors, %.0f goroutines", baseFDs, baseG)

	end := time.Now().Add(soak)
	var wg sync.WaitGroup
	var rounds [3]atomic.Int64
	var failures atomic.Int64
	fail := func(what string, err error) {
		if failures.Add(1) <= 10 {
			t.Errorf("%s: %v", what, err)
		}
	}
	wg.Add(3)
	go func() { // RTMP: 3 s publishes, two at a time
		defer wg.Done()
		for i := 0; time.Now().Before(end); i++ {
			var pair sync.WaitGroup
			for j := range 2 {
				_, _, exited := ffmpegOBS(t, fmt.Sprintf("rtmp://127.0.0.1:%d/live/churn-rtmp-%d", d.RTMPPort, j), 3, 0)
				pair.Add(1)
				go func() { defer pair.Done(); <-exited }()
			}
			pair.Wait()
			rounds[0].Add(1)
		}
	}()
	go func() { // WHIP: create, publish a second, DELETE
		defer wg.Done()
		for i := 0; time.Now().Before(end); i++ {
			p := newWHIPPublisher(t, d.URL+fmt.Sprintf("/whip/churn-whip-%d", i%3))
			time.Sleep(time.Second)
			if err := p.session.Close(context.Background()); err != nil {
				fail("WHIP DELETE", err)
			}
			p.close()
			rounds[1].Add(1)
		}
	}()
	go func() { // RTSP: 2 s pushes, TEARDOWN and reset in turn
		defer wg.Done()
		for i := 0; time.Now().Before(end); i++ {
			url := fmt.Sprintf("rtsp://127.0.0.1:%d/churn-rtsp/cam%d", d.RTSPPort, i%2)
			if err := rtspChurnPush(t, url, 2*time.Second, i%2 == 1); err != nil {
				fail("RTSP push", err)
				time.Sleep(time.Second)
			}
			rounds[2].Add(1)
		}
	}()
	wg.Wait()
	t.Logf("%d RTMP pairs, %d WHIP sessions, %d RTSP pushes", rounds[0].Load(), rounds[1].Load(), rounds[2].Load())

	// everything settles back: rooms empty out, sockets close
	sfutest.WaitFor(t, "file descriptors and goroutines back to baseline", time.Minute, func() bool {
		return openFDs(t, d) <= baseFDs+5 && goroutines() <= baseG+10
	})
	evs := logEvents(t, d.URL)
	open := map[string]int{}
	for _, ev := range evs {
		switch ev.Type {
		case sfu.EventStreamPublishing:
			open[ev.Stream.SID]++
		case sfu.EventStreamUnpublished, sfu.EventStreamFailed:
			open[ev.Stream.SID]--
		}
	}
	streams := 0
	for sid, n := range open {
		streams++
		if n != 0 {
			t.Errorf("stream %s: %+d terminal events missing (or extra when negative)", sid, n)
		}
	}
	t.Logf("%d streams, %d events", streams, len(evs))
}
