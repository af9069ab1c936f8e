package livekit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/coder/websocket"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/rtc"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// FuzzHandleMessage feeds WebSocket messages to a session's request handler (with its two real
// peer connections; no WebSocket): whatever arrives, the handler applies it, refuses it with an
// error that ends the session, or ignores it; it never panics, and what it queues for the client
// stays within the queue. The corpus in testdata/fuzz holds requests captured from livekit-client
// in Chromium (cmd/sluice TestLivekitClientRoom) and from the pion client of these tests, with
// SLUICE_CAPTURE_LIVEKIT naming the corpus directory.
func FuzzHandleMessage(f *testing.F) {
	f.Add(true, []byte(`{"ping":"12"}`))
	f.Add(true, []byte(`{"offer":{"type":"offer","sdp":"v=0"}}`))

	rig := newHandlerRig(f)
	f.Fuzz(func(t *testing.T, text bool, data []byte) {
		typ := websocket.MessageBinary
		if text {
			typ = websocket.MessageText
		}
		rig.feed(t, typ, data)
	})
}

// handlerRig makes bare sessions (real peer connections, no WebSocket) to feed messages to.
type handlerRig struct {
	hub    *sfu.Hub
	engine *rtc.Engine
	srv    *Server
}

func newHandlerRig(tb testing.TB) *handlerRig {
	hub, _ := sfutest.NewHub(tb, nil)
	engine, err := rtc.NewEngine(rtc.Config{Port: 0, BindIP: "127.0.0.1"}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = engine.Close() })
	return &handlerRig{hub: hub, engine: engine, srv: NewServer(engine, hub, api.NewGate(auth.NewVerifier(auth.Config{}, nil), nopEmitter{}), nil)}
}

// feed hands data to a new session's handler twice (a request may be valid only in the state
// the first left), checks the queue's bound and ends the session.
func (r *handlerRig) feed(t *testing.T, typ websocket.MessageType, data []byte) {
	p, err := r.hub.Join("fuzz", sfu.ParticipantSpec{Identity: "fuzzer", Kind: sfu.ParticipantWebRTC})
	if err != nil {
		t.Fatal(err)
	}
	s := newSession(context.Background(), r.srv, nil, p, grant{room: "fuzz", identity: "fuzzer", canPublish: true, canSubscribe: true, canData: true}, true)
	if s.pub.pc, err = r.engine.NewPeerConnection(); err != nil {
		t.Fatal(err)
	}
	if s.sub.pc, err = r.engine.NewPeerConnection(); err != nil {
		t.Fatal(err)
	}
	s.pub.setup()
	s.sub.setup()
	for range 2 {
		_ = s.handleMessage(typ, data)
	}
	if len(s.out) > outQueue {
		t.Fatalf("%d messages queued", len(s.out))
	}
	s.cancel()
	s.pub.stop()
	p.Close(sfu.ReasonClientDisconnected, nil)
	s.sub.stop()
}

// capture adds a client request to the fuzz corpus when SLUICE_CAPTURE_LIVEKIT names its
// directory (testdata/fuzz/FuzzHandleMessage).
func capture(text bool, data []byte) {
	dir := os.Getenv("SLUICE_CAPTURE_LIVEKIT")
	if dir == "" {
		return
	}
	sum := sha256.Sum256(data)
	body := fmt.Sprintf("go test fuzz v1\nbool(%v)\n[]byte(%q)\n", text, data)
	_ = os.WriteFile(filepath.Join(dir, hex.EncodeToString(sum[:8])), []byte(body), 0o600)
}
