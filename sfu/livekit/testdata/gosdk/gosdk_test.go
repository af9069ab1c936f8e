// Package gosdk tests sluice's LiveKit signalling with LiveKit's Go SDK (server-sdk-go) as an
// independent client. It is its own module so that the SDK stays out of sluice's dependency
// graph. The SDK's pion stack gathers on every interface and listens for mDNS, so the tests run
// in a private network namespace (re-executed under unshare -n) whose only interfaces are
// loopback and a veth pair: nothing it sends can leave the machine.
package gosdk

import (
	"context"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	lkauth "github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/auth"
	lk "github.com/sluice-media/sluice/sfu/livekit"
	"github.com/sluice-media/sluice/sfu/rtc"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

const netnsEnv = "SLUICE_GOSDK_NETNS"

func TestMain(m *testing.M) {
	if os.Getenv(netnsEnv) == "" {
		if _, err := exec.LookPath("unshare"); err != nil {
			if os.Getenv("CI") == "true" {
				println("unshare (util-linux) is required: the Go SDK test runs in a loopback-only network namespace")
				os.Exit(1)
			}
			println("skipping: unshare (util-linux) not found")
			os.Exit(0)
		}
		// Loopback, and a dummy interface: pion gathers no loopback candidates, so the SDK
		// needs another address of its own (on a veth pair that ends in the namespace) to reach the server's 127.0.0.1 from.
		setup := `ip link set lo up && ip link add sdk0 type veth peer name sdk1 && ip addr add 10.77.0.1/24 dev sdk0 && ip link set sdk0 up && ip link set sdk1 up && exec "$0" "$@"`
		args := append([]string{"-n", "sh", "-c", setup, os.Args[0]}, os.Args[1:]...)
		cmd := exec.Command("unshare", args...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		cmd.Env = append(os.Environ(), netnsEnv+"=1")
		if err := cmd.Run(); err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				os.Exit(ee.ExitCode())
			}
			println(err.Error())
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// server is an in-process sluice in open mode with the LiveKit endpoint.
func server(t *testing.T) (string, *lk.Server, func(room string) error) {
	hub, em := sfutest.NewHub(t, nil)
	sfutest.RunHub(t, hub)
	engine, err := rtc.NewEngine(rtc.Config{Port: 0, BindIP: "127.0.0.1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	gate := api.NewGate(auth.NewVerifier(auth.Config{}, nil), em)
	srv := lk.NewServer(engine, hub, gate, nil)
	a := api.New(api.Options{Hub: hub, Gate: gate})
	srv.Register(a)
	hs := httptest.NewServer(a.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		hs.Close()
		_ = engine.Close()
	})
	setMeta := func(room string) error { return hub.Room(room).SetMetadata(`{"from":"server"}`) }
	return "ws" + strings.TrimPrefix(hs.URL, "http"), srv, setMeta
}

// token is a LiveKit token made with the protocol's own auth package (open mode does not check
// the signature, only the room and identity).
func token(t *testing.T, identity string) string {
	at := lkauth.NewAccessToken("devkey", "a-secret-long-enough-for-hs256-signing")
	at.SetIdentity(identity).SetValidFor(time.Hour).SetVideoGrant(&lkauth.VideoGrant{RoomJoin: true, Room: "meet"})
	tok, err := at.ToJWT()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Two Go SDK clients in one room: one publishes Opus, the other subscribes and receives it,
// gets the publisher's data, the room's metadata, and sees the publisher leave.
func TestGoSDK(t *testing.T) {
	url, srv, setMeta := server(t)

	var (
		mu        sync.Mutex
		packets   atomic.Int64
		data      []string
		meta      string
		connected []string
		left      []string
	)
	subCB := lksdk.NewRoomCallback()
	subCB.OnParticipantConnected = func(p *lksdk.RemoteParticipant) {
		mu.Lock()
		connected = append(connected, p.Identity())
		mu.Unlock()
	}
	subCB.OnParticipantDisconnected = func(p *lksdk.RemoteParticipant) {
		mu.Lock()
		left = append(left, p.Identity())
		mu.Unlock()
	}
	subCB.OnRoomMetadataChanged = func(md string) {
		mu.Lock()
		meta = md
		mu.Unlock()
	}
	subCB.ParticipantCallback.OnTrackSubscribed = func(tr *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, _ *lksdk.RemoteParticipant) {
		go func() {
			for {
				if _, _, err := tr.ReadRTP(); err != nil {
					return
				}
				packets.Add(1)
			}
		}()
	}
	subCB.ParticipantCallback.OnDataPacket = func(d lksdk.DataPacket, p lksdk.DataReceiveParams) {
		if u, ok := d.(*lksdk.UserDataPacket); ok {
			mu.Lock()
			data = append(data, p.SenderIdentity+"="+string(u.Payload))
			mu.Unlock()
		}
	}
	sub, err := lksdk.ConnectToRoomWithToken(url, token(t, "gosub"), subCB)
	if err != nil {
		t.Fatalf("the subscriber cannot connect: %v", err)
	}
	defer sub.Disconnect()

	pub, err := lksdk.ConnectToRoomWithToken(url, token(t, "gopub"), lksdk.NewRoomCallback(), lksdk.WithAutoSubscribe(false))
	if err != nil {
		t.Fatalf("the publisher cannot connect: %v", err)
	}
	track, err := lksdk.NewLocalTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.LocalParticipant.PublishTrack(track, &lksdk.TrackPublicationOptions{Name: "mic", Source: livekit.TrackSource_MICROPHONE}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	stop := make(chan struct{})
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		pkt := &rtp.Packet{Header: rtp.Header{Version: 2}, Payload: make([]byte, 80)}
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				pkt.SequenceNumber++
				pkt.Timestamp += 960
				_ = track.WriteRTP(pkt, nil)
			case <-stop:
				return
			}
		}
	}()
	defer func() { close(stop); <-sent }()

	sfutest.WaitFor(t, "the subscriber receiving the publisher's audio", 20*time.Second, func() bool { return packets.Load() > 50 })
	if err := pub.LocalParticipant.PublishDataPacket(lksdk.UserData([]byte("hello")), lksdk.WithDataPublishReliable(true)); err != nil {
		t.Fatal(err)
	}
	if err := setMeta("meet"); err != nil {
		t.Fatal(err)
	}
	sfutest.WaitFor(t, "data and room metadata", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(data) > 0 && meta == `{"from":"server"}`
	})
	mu.Lock()
	if data[0] != "gopub=hello" || len(connected) != 1 || connected[0] != "gopub" {
		t.Errorf("data %v, connected %v: want gopub=hello from gopub", data, connected)
	}
	mu.Unlock()

	pub.Disconnect()
	sfutest.WaitFor(t, "the publisher leaving", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(left) == 1 && left[0] == "gopub"
	})
	sfutest.WaitFor(t, "one session left", 10*time.Second, func() bool { return srv.Sessions() == 1 })
}
