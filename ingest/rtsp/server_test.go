package rtsp

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
	"github.com/pion/transport/v4/test"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/ingest/rtsp/rtsptest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

const testSecret = "a-test-secret-that-is-long-enough-000"

// rtspPusher is a gortsplib client publishing the fixtures (an encoder, a camera that pushes).
type rtspPusher struct {
	c      *gortsplib.Client
	paused atomic.Bool
	sent   atomic.Int64
	stop   chan struct{}
	done   chan struct{}
}

// pushRTSP publishes H.264 and G.711 to url; it fails with the server's answer.
func pushRTSP(t testing.TB, rawURL, transport string) (*rtspPusher, error) {
	t.Helper()
	fx := rtsptest.LoadFixtures(t)
	medias := map[string]*description.Media{
		"video": {Type: description.MediaTypeVideo, Formats: []format.Format{&format.H264{PayloadTyp: 96, PacketizationMode: 1, SPS: fx.SPS, PPS: fx.PPS}}},
		"audio": {Type: description.MediaTypeAudio, Formats: []format.Format{&format.G711{PayloadTyp: 0, MULaw: true, SampleRate: 8000, ChannelCount: 1}}},
	}
	p := &rtspPusher{c: &gortsplib.Client{Transport: clientTransport(transport)}, stop: make(chan struct{}), done: make(chan struct{})}
	desc := &description.Session{Medias: []*description.Media{medias["video"], medias["audio"]}}
	if err := p.c.StartRecording(rawURL, desc); err != nil {
		return nil, err
	}
	go rtsptest.FeedMedia(fx, rtsptest.CameraOptions{Inband: true}, medias, &p.paused, &p.sent, p.c.WritePacketRTP, p.stop, p.done)
	t.Cleanup(p.close)
	return p, nil
}

func (p *rtspPusher) close() {
	select {
	case <-p.stop:
		return
	default:
	}
	close(p.stop)
	<-p.done
	p.c.Close()
}

// An RTSP push over TCP and over UDP becomes a participant of kind rtsp with the path's
// identity; RTSP players of the room (main publisher) and of the participant get its video from
// a keyframe on with continuous numbering, and its audio; the publisher's TEARDOWN ends it
// normally.
func TestPushAndPlay(t *testing.T) {
	t.Cleanup(test.CheckRoutines(t)) // runs last: after every other cleanup
	for _, transport := range []string{"tcp", "udp"} {
		t.Run(transport, func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			pub, err := pushRTSP(t, "rtsp://"+h.rtsp+"/studio/encoder", transport)
			if err != nil {
				t.Fatal(err)
			}
			sfutest.WaitFor(t, "the publisher's tracks", 10*time.Second, func() bool {
				p := h.participant("studio", "encoder")
				return p != nil && len(p.Tracks()) == 2 && !trackOf(p, sfu.KindVideo).LastPacketAt().IsZero()
			})
			if k := h.participant("studio", "encoder").Kind(); k != sfu.ParticipantRTSP {
				t.Errorf("kind %q", k)
			}
			main := playRTSP(t, "rtsp://"+h.rtsp+"/studio", transport)
			named := playRTSP(t, "rtsp://"+h.rtsp+"/studio/encoder", transport)
			sfutest.WaitFor(t, "both players", 15*time.Second, func() bool {
				return main.video.Load() > 100 && main.audio.Load() > 50 && named.video.Load() > 100
			})
			for _, pl := range []*rtspPlayer{main, named} {
				if pl.firstKeyframe.Load() != 1 {
					t.Error("a player's first video packet is not a keyframe")
				}
				if j := pl.seqJumps(); j != 0 {
					t.Errorf("%d sequence jumps", j)
				}
				if len(pl.desc.Medias) != 2 {
					t.Errorf("%d medias described", len(pl.desc.Medias))
				}
			}
			main.report(t, 3, 900) // 900 in 90 kHz: 10 ms
			checkRTSPStats(t, h)
			seq := h.lastSeq()
			pub.close()
			ev := h.waitEvent("stream.unpublished", seq, 10*time.Second, func(e sfu.Event) bool {
				return e.Type == sfu.EventStreamUnpublished && e.Participant.Identity == "encoder"
			})
			if ev.Reason != sfu.ReasonClientDisconnected {
				t.Errorf("reason %q", ev.Reason)
			}
		})
	}
}

// A player keeps its session when the publisher leaves and another one takes over the room:
// the numbering runs on.
func TestPlayerFollowsTheMainPublisher(t *testing.T) {
	t.Cleanup(test.CheckRoutines(t)) // runs last: after every other cleanup
	h := newHarness(t, harnessOptions{})
	first, err := pushRTSP(t, "rtsp://"+h.rtsp+"/hall/a", "tcp")
	if err != nil {
		t.Fatal(err)
	}
	sfutest.WaitFor(t, "first publisher", 10*time.Second, func() bool { return h.participant("hall", "a") != nil })
	pl := playRTSP(t, "rtsp://"+h.rtsp+"/hall", "tcp")
	sfutest.WaitFor(t, "video", 10*time.Second, func() bool { return pl.video.Load() > 50 })
	first.close()
	sfutest.WaitFor(t, "the publisher to leave", 10*time.Second, func() bool { return h.participant("hall", "a") == nil })
	before := pl.video.Load()
	if _, err := pushRTSP(t, "rtsp://"+h.rtsp+"/hall/b", "tcp"); err != nil {
		t.Fatal(err)
	}
	sfutest.WaitFor(t, "video from the second publisher", 10*time.Second, func() bool { return pl.video.Load() > before+50 })
	if j := pl.seqJumps(); j != 0 {
		t.Errorf("%d sequence jumps across the switch", j)
	}
}

// statusOf returns the RTSP status code gortsplib reports in err (0 if none).
func statusOf(err error) base.StatusCode {
	var bad liberrors.ErrClientBadStatusCode
	if errors.As(err, &bad) {
		return bad.Code
	}
	return 0
}

func (h *harness) authFailures(since uint64) []sfu.Event {
	var out []sfu.Event
	for _, e := range h.events.Events(since) {
		if e.Type == sfu.EventAuthFailed {
			out = append(out, e)
		}
	}
	return out
}

// Key mode: an ingest's stream key admits a push as ?key=, as the password (Digest and Basic,
// any user) or as the user name, a token with the publish grant too; a bad key gets 401 and auth.failed
// (never the key itself); no credentials gets a 401 challenge, and auth.failed missing_token
// when the client gives up; play needs a token with the subscribe grant; deleting the ingest
// ends its session.
func TestKeyRules(t *testing.T) {
	t.Cleanup(test.CheckRoutines(t)) // runs last: after every other cleanup
	h := newHarness(t, harnessOptions{auth: auth.Config{Keys: map[string]string{"app": testSecret}}})
	ing, err := h.store.Create(ingest.Definition{Type: ingest.TypeRTSPPush, Room: "studio"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	other, err := h.store.Create(ingest.Definition{Type: ingest.TypeRTMP, Room: "elsewhere"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	studio := "rtsp://" + h.rtsp + "/studio"
	token := func(g auth.Grants, identity string) string {
		tok, err := auth.Sign("app", testSecret, auth.Claims{Identity: identity, ExpiresAt: time.Now().Add(time.Hour).Unix(), Grants: g})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	t.Run("key in the query", func(t *testing.T) {
		pub, err := pushRTSP(t, studio+"?key="+ing.StreamKey, "tcp")
		if err != nil {
			t.Fatal(err)
		}
		sfutest.WaitFor(t, "the publisher", 10*time.Second, func() bool { return h.participant("studio", ing.ID) != nil })
		if cur, _ := h.store.Get(ing.ID); cur.State != "connected" {
			t.Errorf("the rtsp_push ingest is %q while its publisher is live", cur.State)
		}
		pub.close()
		sfutest.WaitFor(t, "the publisher to leave", 10*time.Second, func() bool { return h.participant("studio", ing.ID) == nil })
		sfutest.WaitFor(t, "the ingest to be disconnected", 5*time.Second, func() bool { cur, _ := h.store.Get(ing.ID); return cur.State == "disconnected" })
	})
	t.Run("key as the digest password", func(t *testing.T) {
		pub, err := pushRTSP(t, "rtsp://anyone:"+ing.StreamKey+"@"+h.rtsp+"/studio/cam2", "udp")
		if err != nil {
			t.Fatal(err)
		}
		sfutest.WaitFor(t, "the publisher", 10*time.Second, func() bool { return h.participant("studio", "cam2") != nil })
		pub.close()
	})
	t.Run("key as the user name", func(t *testing.T) {
		pub, err := pushRTSP(t, "rtsp://"+ing.StreamKey+":x@"+h.rtsp+"/studio/cam3", "tcp")
		if err != nil {
			t.Fatal(err)
		}
		sfutest.WaitFor(t, "the publisher", 10*time.Second, func() bool { return h.participant("studio", "cam3") != nil })
		pub.close()
	})
	t.Run("key as the basic password", func(t *testing.T) {
		code := rawAnnounce(t, h.rtsp, "/studio/basic", "Basic "+basicAuth("x", ing.StreamKey))
		if code != 200 {
			t.Errorf("ANNOUNCE with Basic credentials: %d", code)
		}
	})
	t.Run("token with publish grant", func(t *testing.T) {
		pub, err := pushRTSP(t, studio+"?token="+token(auth.Grants{Room: "studio", Publish: true}, "obs"), "tcp")
		if err != nil {
			t.Fatal(err)
		}
		sfutest.WaitFor(t, "the publisher", 10*time.Second, func() bool { return h.participant("studio", "obs") != nil })
		pub.close()
	})
	t.Run("bad keys", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			url  string
			code base.StatusCode
		}{
			{"unknown key", studio + "?key=sk_not-a-key-at-all-0000", base.StatusUnauthorized},
			{"wrong password", "rtsp://u:sk_wrong-password-000000@" + h.rtsp + "/studio", base.StatusUnauthorized},
			{"token without publish", studio + "?token=" + token(auth.Grants{Room: "studio", Subscribe: true}, ""), base.StatusForbidden},
			{"another room's key", studio + "?key=" + other.StreamKey, base.StatusForbidden},
		} {
			seq := h.lastSeq()
			_, err := pushRTSP(t, tc.url, "tcp")
			if c := statusOf(err); c != tc.code {
				t.Errorf("%s: status %d, want %d (%v)", tc.name, c, tc.code, err)
			}
			fails := h.authFailures(seq)
			if len(fails) != 1 || fails[0].Protocol != "rtsp" || fails[0].RemoteAddr == "" {
				t.Errorf("%s: auth.failed events %v", tc.name, eventSummary(fails))
			}
		}
		if strings.Contains(h.logs.String(), ing.StreamKey) || strings.Contains(h.logs.String(), other.StreamKey) {
			t.Error("a stream key is in the logs")
		}
	})
	t.Run("no credentials", func(t *testing.T) {
		seq := h.lastSeq()
		_, err := pushRTSP(t, studio, "tcp")
		if statusOf(err) != base.StatusUnauthorized {
			t.Errorf("status %v", err)
		}
		ev := h.waitEvent("auth.failed", seq, 5*time.Second, func(e sfu.Event) bool { return e.Type == sfu.EventAuthFailed })
		if ev.Reason != sfu.AuthMissingToken {
			t.Errorf("reason %q", ev.Reason)
		}
	})
	t.Run("play", func(t *testing.T) {
		pub, err := pushRTSP(t, studio+"?key="+ing.StreamKey, "tcp")
		if err != nil {
			t.Fatal(err)
		}
		defer pub.close()
		sfutest.WaitFor(t, "the publisher", 10*time.Second, func() bool { return h.participant("studio", ing.ID) != nil })
		for _, u := range []string{studio, studio + "?key=" + ing.StreamKey, studio + "?token=" + token(auth.Grants{Room: "studio", Publish: true}, "")} {
			c := &gortsplib.Client{}
			pu, _ := parseURL(u)
			c.Scheme, c.Host = pu.Scheme, pu.Host
			if err := c.Start2(); err != nil {
				t.Fatal(err)
			}
			_, _, err := c.Describe(pu)
			c.Close()
			if code := statusOf(err); code != base.StatusUnauthorized && code != base.StatusForbidden {
				t.Errorf("DESCRIBE %s: %v", u[:strings.IndexByte(u, '?')+1], err)
			}
		}
		pl := playRTSP(t, studio+"?token="+token(auth.Grants{Room: "studio", Subscribe: true}, "nvr"), "tcp")
		sfutest.WaitFor(t, "video", 10*time.Second, func() bool { return pl.video.Load() > 20 })
		if h.participant("studio", "nvr") == nil {
			t.Error("the player does not have its token's identity")
		}

		seq := h.lastSeq()
		if err := h.store.Delete(ing.ID); err != nil {
			t.Fatal(err)
		}
		left := h.waitEvent("the publisher to leave", seq, 5*time.Second, func(e sfu.Event) bool {
			return e.Type == sfu.EventParticipantLeft && e.Participant.Identity == ing.ID
		})
		if left.Reason != sfu.ReasonRemoved {
			t.Errorf("reason %q", left.Reason)
		}
	})
}

func parseURL(u string) (*base.URL, error) { return base.ParseURL(u) }

func basicAuth(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
}

// rawAnnounce sends one ANNOUNCE with an H.264 SDP and returns the status code.
func rawAnnounce(t *testing.T, addr, path, authorization string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	sdp := "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=test\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n" +
		"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\na=control:trackID=0\r\n"
	req := fmt.Sprintf("ANNOUNCE rtsp://%s%s RTSP/1.0\r\nCSeq: 1\r\nContent-Type: application/sdp\r\nAuthorization: %s\r\nContent-Length: %d\r\n\r\n%s",
		addr, path, authorization, len(sdp), sdp)
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	var code int
	_, _ = fmt.Sscanf(line, "RTSP/1.0 %d", &code)
	return code
}

// checkRTSPStats waits until the stream.stats figures of the room's publisher (bytes, jitter,
// loss) and players (bytes; loss and jitter once a receiver report came) are known, and checks
// them: the player that reported 3 packets lost and 10 ms of jitter is shown with those.
func checkRTSPStats(t *testing.T, h *harness) {
	t.Helper()
	var streams []*sfu.StreamInfo
	reported := func(s *sfu.StreamInfo) bool { return s.PacketsLost != nil && s.JitterMs != nil }
	sfutest.WaitFor(t, "the streams' protocol figures", 10*time.Second, func() bool {
		streams = streams[:0]
		withReports := 0
		for _, p := range h.hub.Room("studio").Status().Participants {
			for _, s := range p.Streams {
				if s.Bytes == nil || *s.Bytes == 0 || s.Direction == sfu.DirectionPublish && !reported(s) {
					return false
				}
				if s.Direction == sfu.DirectionPlay && reported(s) && *s.PacketsLost == 3 {
					withReports++
				}
				streams = append(streams, s)
			}
		}
		return len(streams) == 3 && withReports >= 1
	})
	for _, s := range streams {
		if !reported(s) {
			t.Logf("%s: %d bytes, no receiver report", s.Direction, *s.Bytes)
			continue
		}
		if *s.PacketsLost < 0 || *s.PacketsLost > 10 || *s.JitterMs < 0 || *s.JitterMs > 1000 {
			t.Errorf("%s stream: %d packets lost, jitter %v ms on loopback", s.Direction, *s.PacketsLost, *s.JitterMs)
		}
		if s.Direction == sfu.DirectionPlay && *s.PacketsLost == 3 && *s.JitterMs != 10 {
			t.Errorf("the reporting player's jitter is %v ms, want 10", *s.JitterMs)
		}
		t.Logf("%s: %d bytes, %d lost, jitter %v ms", s.Direction, *s.Bytes, *s.PacketsLost, *s.JitterMs)
	}
}
