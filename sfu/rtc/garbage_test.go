package rtc

import (
	"crypto/rand"
	"encoding/binary"
	"hash/crc32"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu/auth"
)

// fakeBindingRequest builds a STUN binding request (RFC 8489) for username with a
// MESSAGE-INTEGRITY that cannot verify and a correct FINGERPRINT, so that it passes every
// check before the integrity one.
func fakeBindingRequest(username string) []byte {
	attr := func(b []byte, typ uint16, v []byte) []byte {
		b = binary.BigEndian.AppendUint16(b, typ)
		b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
		b = append(b, v...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	b := make([]byte, 20, 128)
	binary.BigEndian.PutUint16(b[0:], 0x0001)
	binary.BigEndian.PutUint32(b[4:], 0x2112A442)
	_, _ = rand.Read(b[8:20])
	b = attr(b, 0x0006, []byte(username))
	mi := make([]byte, 20)
	_, _ = rand.Read(mi)
	b = attr(b, 0x0008, mi)
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)-20+8)) // the length covers the fingerprint
	fp := crc32.ChecksumIEEE(b) ^ 0x5354554e
	return attr(b, 0x8028, binary.BigEndian.AppendUint32(nil, fp))
}

// iceUfrag returns the a=ice-ufrag of an SDP.
func iceUfrag(sdp string) string {
	for _, line := range strings.Split(sdp, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "a=ice-ufrag:"); ok {
			return v
		}
	}
	return ""
}

// UDP garbage at the WebRTC media port, 10k datagrams a second from several addresses (random
// bytes, RTP- and DTLS-looking packets, STUN binding requests for unknown and for live ICE
// sessions with integrity that does not verify): a viewer keeps a continuous stream and a WHIP
// publisher that negotiates meanwhile connects and is played.
func TestUDPGarbageAtTheMediaPort(t *testing.T) {
	h := newHarness(t, auth.Config{})
	defer h.close()
	client := clientAPI(t)
	pub := publish(t, client, h.http.URL+"/whip/noisy", "")
	defer pub.close()
	waitUntil(t, "the publisher's tracks", 10*time.Second, func() bool {
		r := h.hub.Room("noisy")
		return r != nil && r.MainPublisher() != nil && len(r.MainPublisher().Tracks()) == 2
	})
	viewer := play(t, client, h.http.URL+"/whep/noisy", "", true)
	defer viewer.close()
	waitUntil(t, "the viewer receiving video", 10*time.Second, func() bool { return viewer.video.Load() > 0 })

	port := h.engine.LocalAddr().(*net.UDPAddr).Port
	dst := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	// usernames of live sessions (server ufrag : client ufrag) and unknown ones
	live := []string{
		iceUfrag(pub.pc.RemoteDescription().SDP) + ":" + iceUfrag(pub.pc.LocalDescription().SDP),
		iceUfrag(viewer.pc.RemoteDescription().SDP) + ":" + iceUfrag(viewer.pc.LocalDescription().SDP),
		iceUfrag(viewer.pc.RemoteDescription().SDP) + ":attacker",
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent [8]int
	const perSenderPerMs = 10 / 8.0 // 10k datagrams a second in all
	for s := range len(sent) {
		conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			buf := make([]byte, 1200)
			tick := time.NewTicker(4 * time.Millisecond)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				for range int(4 * perSenderPerMs) {
					var pkt []byte
					switch i % 5 {
					case 0: // random bytes
						pkt = buf[:20+i%1100]
						_, _ = rand.Read(pkt)
					case 1: // RTP-looking
						pkt = buf[:200]
						_, _ = rand.Read(pkt)
						pkt[0], pkt[1] = 0x80, 96
					case 2: // DTLS-looking (a ClientHello record header)
						pkt = buf[:150]
						_, _ = rand.Read(pkt)
						pkt[0], pkt[1], pkt[2] = 22, 0xfe, 0xfd
					case 3: // STUN for a live session, integrity that does not verify
						pkt = fakeBindingRequest(live[i%len(live)])
					default: // STUN for an unknown session
						pkt = fakeBindingRequest("nobody:" + string(rune('a'+s)))
					}
					if _, err := conn.WriteToUDP(pkt, dst); err == nil {
						sent[s]++
					}
					i++
				}
			}
		}()
	}
	startSent := pub.videoSent.Load()
	// a publisher negotiating while the garbage flows connects and is played
	late := publish(t, client, h.http.URL+"/whip/late", "")
	defer late.close()
	waitUntil(t, "the late publisher's tracks", 15*time.Second, func() bool {
		r := h.hub.Room("late")
		return r != nil && r.MainPublisher() != nil && len(r.MainPublisher().Tracks()) == 2
	})
	lateViewer := play(t, client, h.http.URL+"/whep/late", "", true)
	defer lateViewer.close()
	waitUntil(t, "the late publisher's media to reach its viewer", 15*time.Second, func() bool { return lateViewer.video.Load() > 0 })
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()
	total := 0
	for _, n := range sent {
		total += n
	}
	if total < 10000 {
		t.Fatalf("only %d garbage datagrams sent", total)
	}
	videoSent := pub.videoSent.Load() - startSent
	loss, span := viewer.videoLoss()
	t.Logf("%d garbage datagrams; the viewer: %.2f%% of video missing over %d packets (the publisher sent %d meanwhile)", total, loss*100, span, videoSent)
	if loss > 0.01 || span < videoSent {
		t.Errorf("the viewer lost %.2f%% of video over %d packets while the publisher sent %d", loss*100, span, videoSent)
	}
	if r := h.hub.Room("noisy"); r == nil || len(r.Participants()) != 2 {
		t.Errorf("the garbage changed the room: %v", r)
	}
}
