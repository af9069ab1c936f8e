package main

import (
	"context"
	"io"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu/rtc"
)

// cliProc is a long-running sluice client command (status -f, webhooks listen).
type cliProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startCLI runs the binary with args until ctx ends.
func startCLI(ctx context.Context, stdout, stderr io.Writer, args ...string) *cliProc {
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	p := &cliProc{cmd: cmd, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		close(p.done)
		return p
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p
}

func (p *cliProc) wait() { <-p.done }

// whipPublisher is a pion WHIP publisher of synthetic H.264 and Opus.
type whipPublisher struct {
	pc      *webrtc.PeerConnection
	session *rtc.Session
	stop    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
}

func newWHIPPublisher(t *testing.T, endpoint string) *whipPublisher {
	t.Helper()
	return newWHIPPublisherWith(t, endpoint, "", 0)
}

// newWHIPPublisherWith publishes with a token (key mode) and sends no audio before audioAfter:
// the audio track is then published after stream.publishing.
func newWHIPPublisherWith(t *testing.T, endpoint, token string, audioAfter time.Duration) *whipPublisher {
	t.Helper()
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	api, err := rtc.LoopbackAPI(m)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	video, _ := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"}, "video", "pub")
	audio, _ := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "pub")
	p := &whipPublisher{pc: pc, stop: make(chan struct{})}
	for _, tr := range []webrtc.TrackLocal{video, audio} {
		sender, err := pc.AddTrack(tr)
		if err != nil {
			t.Fatal(err)
		}
		p.wg.Add(1)
		go func() { // drain RTCP
			defer p.wg.Done()
			buf := make([]byte, 1500)
			for {
				if _, _, err := sender.Read(buf); err != nil {
					return
				}
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p.session, err = rtc.Negotiate(ctx, endpoint, token, pc)
	if err != nil {
		_ = pc.Close()
		p.wg.Wait()
		t.Fatal(err)
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(33 * time.Millisecond)
		defer tick.Stop()
		var vseq, aseq uint16
		for n := 0; ; n++ {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			ts := uint32(n * 3000)
			if n%30 == 0 {
				stap := []byte{0x78, 0, 4, 0x67, 0x42, 0xe0, 0x1f, 0, 3, 0x68, 0xce, 0x3c}
				_ = video.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: vseq, Timestamp: ts}, Payload: stap})
				vseq++
				idr := make([]byte, 600)
				idr[0] = 0x65
				_ = video.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: vseq, Timestamp: ts, Marker: true}, Payload: idr})
			} else {
				slice := make([]byte, 300)
				slice[0] = 0x41
				_ = video.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: vseq, Timestamp: ts, Marker: true}, Payload: slice})
			}
			vseq++
			if time.Duration(n)*33*time.Millisecond < audioAfter {
				continue
			}
			_ = audio.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: aseq, Timestamp: uint32(aseq) * 1440}, Payload: make([]byte, 80)})
			aseq++
		}
	}()
	t.Cleanup(p.close)
	return p
}

func (p *whipPublisher) close() {
	p.once.Do(func() {
		close(p.stop)
		_ = p.pc.Close()
		p.wg.Wait()
	})
}
