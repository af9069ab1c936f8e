package rtsp

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/sdp"
	"github.com/pion/rtp"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// fuzzChunkSep splits a fuzz input into the pieces sent one after the other; "$SESSION$" in a
// piece is replaced by the session id the server gave, so that the corpus can reach SETUP,
// RECORD and PLAY and feed interleaved RTP into the depacketizers.
var fuzzChunkSep = []byte("\n~~~\n")

// FuzzServerRequest sends raw bytes (requests, SDPs, interleaved RTP/RTCP) to the RTSP server
// over TCP, in open mode (first byte even) or key mode (odd). Invariants: the server never
// panics and still answers OPTIONS on a new connection afterwards.
func FuzzServerRequest(f *testing.F) {
	f.Add([]byte("\x00OPTIONS rtsp://h/ RTSP/1.0\r\nCSeq: 1\r\n\r\n"))
	f.Add([]byte("\x01DESCRIBE rtsp://h/room?token=a.b.c RTSP/1.0\r\nCSeq: 1\r\n\r\n"))
	open := newHarness(f, harnessOptions{})
	keyed := newHarness(f, harnessOptions{auth: auth.Config{Keys: map[string]string{"app": testSecret}}})
	// A live publisher, so that the corpus's DESCRIBE/SETUP/PLAY reach the player.
	if _, err := pushRTSP(f, "rtsp://"+open.rtsp+"/live", "tcp"); err != nil {
		f.Fatal(err)
	}
	sfutest.WaitFor(f, "the live publisher", 10*time.Second, func() bool {
		r := open.hub.Room("live")
		return r != nil && r.MainPublisher() != nil && !trackOf(r.MainPublisher(), sfu.KindVideo).LastPacketAt().IsZero()
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 || len(data) > 64<<10 {
			return
		}
		h := open
		if data[0]&1 == 1 {
			h = keyed
		}
		fuzzConversation(h.rtsp, data[1:])
		if !answersOptions(h.rtsp) {
			t.Fatal("the server stopped answering after this input")
		}
	})
}

// fuzzConversation sends the pieces of data to addr, pipelined; it reads the answers only when
// a piece needs the session id, and ends by closing its side and draining, within a bounded
// time.
func fuzzConversation(addr string, data []byte) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return
	}
	defer func() { _ = conn.Close() }()
	end := time.Now().Add(2 * time.Second)
	_ = conn.SetDeadline(end)
	br := bufio.NewReader(conn)
	session := ""
	for _, chunk := range bytes.Split(data, fuzzChunkSep) {
		for session == "" && bytes.Contains(chunk, []byte("$SESSION$")) {
			_ = conn.SetReadDeadline(minTime(end, time.Now().Add(300*time.Millisecond)))
			res, err := readResponse(br)
			if err != nil {
				break
			}
			if v, ok := res.Header["Session"]; ok && len(v) > 0 {
				session, _, _ = strings.Cut(v[0], ";")
			}
		}
		chunk = bytes.ReplaceAll(chunk, []byte("$SESSION$"), []byte(session))
		if _, err := conn.Write(chunk); err != nil {
			return
		}
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	_ = conn.SetReadDeadline(end)
	_, _ = io.Copy(io.Discard, io.LimitReader(br, 1<<20))
}

// readResponse reads the next RTSP response, skipping interleaved frames.
func readResponse(br *bufio.Reader) (*base.Response, error) {
	for {
		b, err := br.Peek(4)
		if err != nil {
			return nil, err
		}
		if b[0] != '$' {
			var res base.Response
			return &res, res.Unmarshal(br)
		}
		if _, err := br.Discard(4 + int(binary.BigEndian.Uint16(b[2:4]))); err != nil {
			return nil, err
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// answersOptions reports whether the server answers an OPTIONS request.
func answersOptions(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return false
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("OPTIONS rtsp://" + addr + "/ RTSP/1.0\r\nCSeq: 1\r\n\r\n")); err != nil {
		return false
	}
	res, err := readResponse(bufio.NewReader(conn))
	return err == nil && res.StatusCode == base.StatusOK
}

// FuzzSDP parses an SDP as a camera's DESCRIBE answer or a publisher's ANNOUNCE, builds the
// inputs, feeds them RTP packets cut from the second argument, and describes the resulting
// tracks back for play. Invariants: no panic; every published codec can be described or is
// refused with an error.
func FuzzSDP(f *testing.F) {
	f.Add([]byte("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"+
		"a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z0LADdkBQfsBEAAAAwAQAAADAyDxQqSA,aMuDyyA=\r\n"+
		"m=audio 0 RTP/AVP 0\r\n"), []byte{0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0x65, 0x88, 0x84})
	hub, err := sfu.NewHub(sfu.Options{Config: sfu.DefaultConfig(), Emitter: sfu.NewLocalEmitter(100, nil)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(hub.Close)
	log := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, sdpBytes, rtpBytes []byte) {
		var ssd sdp.SessionDescription
		if ssd.Unmarshal(sdpBytes) != nil {
			return
		}
		var desc description.Session
		if desc.Unmarshal(&ssd) != nil {
			return
		}
		inputs, _ := buildInputs(&desc, time.Now, log)
		if len(inputs) == 0 {
			return
		}
		p, err := hub.Join("fuzz", sfu.ParticipantSpec{Kind: sfu.ParticipantRTSP})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close(sfu.ReasonClientDisconnected, nil)
		for _, in := range inputs {
			tr, err := p.Publish(in.trackSpec())
			if err != nil {
				t.Fatal(err)
			}
			if err := in.attach(tr); err != nil {
				continue
			}
			// Packets: 2-byte length prefixes over rtpBytes, each unmarshalled as RTP.
			for rest := rtpBytes; len(rest) > 2; {
				n := int(binary.BigEndian.Uint16(rest))
				rest = rest[2:]
				n = min(n, len(rest))
				var pkt rtp.Packet
				if pkt.Unmarshal(bytes.Clone(rest[:n])) == nil {
					pkt.PayloadType = in.format.PayloadType()
					in.onRTP(&pkt)
				}
				rest = rest[n:]
			}
			if pf, err := playFormat(in.codec, 96); err == nil {
				m := &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{pf}}
				if in.codec.Kind() == sfu.KindAudio {
					m.Type = description.MediaTypeAudio
				}
				_, _ = (&description.Session{Medias: []*description.Media{m}}).Marshal(false)
			}
		}
	})
}
