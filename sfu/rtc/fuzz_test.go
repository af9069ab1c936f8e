package rtc

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu/auth"
)

var fuzzClient = &http.Client{Timeout: 10 * time.Second}

// FuzzWHIPOffer sends arbitrary bodies as WHIP offers through the real handler: the answer is
// always a 201 or a 4xx, never a panic or a 5xx, and the daemon keeps serving.
func FuzzWHIPOffer(f *testing.F) {
	f.Add(offerSDP(f, (*webrtc.MediaEngine).RegisterDefaultCodecs, webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio))
	f.Add("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n")
	f.Add("v=0\r\nm=audio 0 RTP/AVP 0\r\n")
	f.Add("")
	h := newHarness(f, auth.Config{})
	f.Cleanup(h.close)
	f.Fuzz(func(t *testing.T, body string) {
		req, _ := http.NewRequest("POST", h.http.URL+"/whip/fuzz", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/sdp")
		resp, err := fuzzClient.Do(req)
		if err != nil {
			t.Fatalf("%v for %q", err, body)
		}
		resp.Body.Close()
		if resp.StatusCode >= 500 || (resp.StatusCode != 201 && resp.StatusCode < 400) {
			t.Fatalf("status %d for %q", resp.StatusCode, body)
		}
		if resp.StatusCode == 201 {
			del, _ := http.NewRequest("DELETE", h.http.URL+resp.Header.Get("Location"), nil)
			if r, err := fuzzClient.Do(del); err == nil {
				r.Body.Close()
			}
		}
	})
}
