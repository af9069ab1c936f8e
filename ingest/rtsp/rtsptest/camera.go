// Package rtsptest is an IP camera for tests: a gortsplib server serving real H.264 (made by
// ffmpeg's libx264) and G.711 or AAC, with credentials, RTSPS, restarts and pauses. It is
// imported only by tests.
package rtsptest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"embed"
	"fmt"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpfragmented"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpsimpleaudio"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/rtp"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// The fixtures were made with ffmpeg 5.1 (libx264, baseline, one keyframe a second, access unit
// delimiters so that access units can be split without parsing slices):
//
//	ffmpeg -f lavfi -i testsrc=size=320x240:rate=25 -t 4 -c:v libx264 -profile:v baseline \
//	  -pix_fmt yuv420p -g 25 -bf 0 -x264-params aud=1:keyint=25:min-keyint=25:scenecut=0 \
//	  -b:v 300k -f h264 camera.h264
//	ffmpeg -f lavfi -i sine=frequency=440:sample_rate=8000 -t 4 -ac 1 -f mulaw camera.ulaw
//	ffmpeg -f lavfi -i sine=frequency=440:sample_rate=48000 -t 4 -ac 2 -c:a aac -b:a 64k -f adts camera.aac

//go:embed testdata
var testdata embed.FS

// Fixtures are the camera's media, split into frames.
type Fixtures struct {
	SPS, PPS  []byte
	Video     [][][]byte // access units without delimiters, SEI and parameter sets
	ULaw      []byte     // 8 kHz mono µ-law
	AAC       [][]byte   // 48 kHz stereo AAC-LC access units
	AACConfig *mpeg4audio.AudioSpecificConfig
}

var (
	fixturesOnce sync.Once
	fixturesVal  *Fixtures
	fixturesErr  error
)

// LoadFixtures returns the fixtures, parsed once per test binary.
func LoadFixtures(t testing.TB) *Fixtures {
	t.Helper()
	fixturesOnce.Do(func() { fixturesVal, fixturesErr = readFixtures() })
	if fixturesErr != nil {
		t.Fatal(fixturesErr)
	}
	return fixturesVal
}

func readFixtures() (*Fixtures, error) {
	f := &Fixtures{}
	raw, err := testdata.ReadFile("testdata/camera.h264")
	if err != nil {
		return nil, err
	}
	var au [][]byte
	for _, n := range splitAnnexB(raw) {
		switch n[0] & 0x1f {
		case 9: // access unit delimiter: the previous unit is complete
			if len(au) > 0 {
				f.Video = append(f.Video, au)
			}
			au = nil
		case 7:
			f.SPS = n
		case 8:
			f.PPS = n
		case 6: // SEI: leave it out
		default:
			au = append(au, n)
		}
	}
	if len(au) > 0 {
		f.Video = append(f.Video, au)
	}
	if f.ULaw, err = testdata.ReadFile("testdata/camera.ulaw"); err != nil {
		return nil, err
	}
	adts, err := testdata.ReadFile("testdata/camera.aac")
	if err != nil {
		return nil, err
	}
	var pkts mpeg4audio.ADTSPackets
	if err := pkts.Unmarshal(adts); err != nil {
		return nil, err
	}
	for _, p := range pkts {
		f.AAC = append(f.AAC, p.AU)
	}
	f.AACConfig = &mpeg4audio.AudioSpecificConfig{Type: pkts[0].Type, SampleRate: pkts[0].SampleRate, ChannelCount: pkts[0].ChannelCount}
	if len(f.Video) < 50 || f.SPS == nil || f.PPS == nil {
		return nil, fmt.Errorf("camera.h264: %d access units, sps %v", len(f.Video), f.SPS != nil)
	}
	return f, nil
}

// splitAnnexB returns the NAL units of an Annex-B byte stream (start codes 00 00 01 and
// 00 00 00 01).
func splitAnnexB(b []byte) [][]byte {
	var out [][]byte
	start := -1
	for i := 0; i+2 < len(b); i++ {
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 {
			if start >= 0 {
				end := i
				if end > start && b[end-1] == 0 {
					end--
				}
				out = append(out, b[start:end])
			}
			start = i + 3
			i += 2
		}
	}
	if start >= 0 && start < len(b) {
		out = append(out, b[start:])
	}
	return out
}

// CameraOptions shape a Camera.
type CameraOptions struct {
	User, Pass string // required credentials ("" = none)
	Audio      string // "pcmu" (default), "aac", "latm", "none"
	TLS        bool   // serve RTSPS
	NoUDP      bool   // TCP only
	Inband     bool   // also send SPS/PPS in-band (default: only in the SDP, as many cameras do)
	MJPEG      bool   // add an M-JPEG video media (not supported by sluice)

	// Clock, when set, makes the camera's clocks jump while it runs (Clock.JumpRTP, JumpNTP).
	Clock *Clock
	// WrapAfter starts the RTP clocks this long before they wrap around 2^32 (0: at 0).
	WrapAfter time.Duration
	// Reorder sends every fifth RTP packet of each media after the packet that follows it, as
	// a network that reorders packets would (the test kernel has no netem).
	Reorder bool
}

// Clock holds a camera's clock faults: offsets of its RTP clocks and of the NTP time of its
// RTCP sender reports, changed by jumps while it runs. Safe for concurrent use.
type Clock struct {
	rtp, ntp atomic.Int64 // nanoseconds
}

// JumpRTP moves the camera's RTP clocks (every media's) by d, forward or back.
func (c *Clock) JumpRTP(d time.Duration) { c.rtp.Add(int64(d)) }

// JumpNTP moves the wall-clock time the camera's sender reports give by d.
func (c *Clock) JumpNTP(d time.Duration) { c.ntp.Add(int64(d)) }

// rtpTicks returns the RTP clock offset in ticks of a clock rate.
func (c *Clock) rtpTicks(rate int64) int64 {
	if c == nil {
		return 0
	}
	d := c.rtp.Load()
	return d/int64(time.Second)*rate + d%int64(time.Second)*rate/int64(time.Second)
}

// NTP returns the wall-clock time the camera's sender reports give for now.
func (c *Clock) NTP(now time.Time) time.Time {
	if c == nil {
		return now
	}
	return now.Add(time.Duration(c.ntp.Load()))
}

// Camera is an IP camera: a gortsplib server serving /stream with H.264 (from the fixture,
// 25 fps, packets larger than the WebRTC MTU) and audio, with digest/basic auth, restartable on
// the same ports, and a switch that keeps the session but stops the media. Start and Shutdown
// are called from the test goroutine; the counters may be read from anywhere.
type Camera struct {
	t    testing.TB
	opts CameraOptions
	fx   *Fixtures
	addr string
	rtp  int

	mu     sync.Mutex
	srv    *gortsplib.Server
	stream *gortsplib.ServerStream
	media  map[string]*description.Media
	stop   chan struct{}
	done   chan struct{}

	// Paused keeps the sessions but stops the media (timestamps run on).
	Paused atomic.Bool
	// Describes counts DESCRIBE requests; Refused those that came with wrong credentials.
	Describes atomic.Int32
	Refused   atomic.Int32
	Plays     atomic.Int32
	SentVideo atomic.Int64
}

// NewCamera starts a camera on free loopback ports; it is shut down when the test ends.
func NewCamera(t testing.TB, opts CameraOptions) *Camera {
	t.Helper()
	e := &Camera{t: t, opts: opts, fx: LoadFixtures(t), addr: fmt.Sprintf("127.0.0.1:%d", sfutest.FreeTCPPort(t))}
	if !opts.NoUDP {
		e.rtp, _ = sfutest.FreeUDPPair(t)
	}
	e.Start()
	t.Cleanup(e.Shutdown)
	return e
}

// URL is the camera's URL with the given credentials ("" for none).
func (e *Camera) URL(user, pass string) string {
	scheme := "rtsp"
	if e.opts.TLS {
		scheme = "rtsps"
	}
	cred := ""
	if user != "" {
		cred = user + ":" + pass + "@"
	}
	return scheme + "://" + cred + e.addr + "/stream"
}

// Addr returns the camera's host:port.
func (e *Camera) Addr() string { return e.addr }

// Start (re)starts the camera on its ports.
func (e *Camera) Start() {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	srv := &gortsplib.Server{Handler: &cameraHandler{e}, RTSPAddress: e.addr}
	if e.rtp != 0 {
		srv.UDPRTPAddress = fmt.Sprintf("127.0.0.1:%d", e.rtp)
		srv.UDPRTCPAddress = fmt.Sprintf("127.0.0.1:%d", e.rtp+1)
	}
	if e.opts.TLS {
		srv.TLSConfig = selfSignedTLS(e.t)
	}
	var err error
	for range 50 { // the ports of the previous run may take a moment to be free
		if err = srv.Start(); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		e.t.Fatalf("emulator: %v", err)
	}
	e.srv = srv
	e.media = map[string]*description.Media{}
	desc := &description.Session{}
	h264 := &format.H264{PayloadTyp: 96, PacketizationMode: 1, SPS: e.fx.SPS, PPS: e.fx.PPS}
	e.media["video"] = &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{h264}}
	desc.Medias = append(desc.Medias, e.media["video"])
	switch e.opts.Audio {
	case "", "pcmu":
		e.media["audio"] = &description.Media{Type: description.MediaTypeAudio,
			Formats: []format.Format{&format.G711{PayloadTyp: 0, MULaw: true, SampleRate: 8000, ChannelCount: 1}}}
	case "aac":
		e.media["audio"] = &description.Media{Type: description.MediaTypeAudio, Formats: []format.Format{&format.MPEG4Audio{
			PayloadTyp: 97, ProfileLevelID: 1, Config: e.fx.AACConfig, SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3}}}
	case "latm":
		e.media["audio"] = &description.Media{Type: description.MediaTypeAudio, Formats: []format.Format{&format.MPEG4AudioLATM{
			PayloadTyp: 98, ProfileLevelID: 30, StreamMuxConfig: &mpeg4audio.StreamMuxConfig{
				Programs: []*mpeg4audio.StreamMuxConfigProgram{{Layers: []*mpeg4audio.StreamMuxConfigLayer{{
					AudioSpecificConfig: e.fx.AACConfig, LatmBufferFullness: 255}}}}}}}}
	}
	if e.media["audio"] != nil {
		desc.Medias = append(desc.Medias, e.media["audio"])
	}
	if e.opts.MJPEG {
		desc.Medias = append(desc.Medias, &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{&format.MJPEG{}}})
	}
	e.stream = &gortsplib.ServerStream{Server: srv, Desc: desc}
	if err := e.stream.Initialize(); err != nil {
		e.t.Fatal(err)
	}
	e.stop, e.done = make(chan struct{}), make(chan struct{})
	go e.feed(e.stream, e.stop, e.done)
}

// Shutdown stops the camera as a power cut would: its port refuses connections.
func (e *Camera) Shutdown() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.srv == nil {
		return
	}
	close(e.stop)
	<-e.done
	e.stream.Close()
	e.srv.Close()
	e.srv = nil
}

// feed runs the camera's media into its stream until stop.
func (e *Camera) feed(stream *gortsplib.ServerStream, stop <-chan struct{}, done chan<- struct{}) {
	write := func(m *description.Media, p *rtp.Packet) error {
		return stream.WritePacketRTPWithNTP(m, p, e.opts.Clock.NTP(time.Now()))
	}
	FeedMedia(e.fx, e.opts, e.media, &e.Paused, &e.SentVideo, write, stop, done)
}

// reorderer holds back every fifth packet of each media until the next one is written.
type reorderer struct {
	write func(*description.Media, *rtp.Packet) error
	n     map[*description.Media]int
	held  map[*description.Media]*rtp.Packet
}

func (r *reorderer) writePacket(m *description.Media, p *rtp.Packet) error {
	r.n[m]++
	if r.n[m]%5 == 0 {
		r.held[m] = p
		return nil
	}
	err := r.write(m, p)
	if h := r.held[m]; h != nil {
		delete(r.held, m)
		_ = r.write(m, h)
	}
	return err
}

// FeedMedia writes the fixtures in real time until stop: video at 25 fps, audio every 20 ms (AAC
// per 1024 samples). While paused nothing is sent; timestamps run on. The clock faults and
// reordering of opts apply.
func FeedMedia(fx *Fixtures, opts CameraOptions, medias map[string]*description.Media, paused *atomic.Bool, sentVideo *atomic.Int64,
	write func(*description.Media, *rtp.Packet) error, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	if opts.Reorder {
		r := &reorderer{write: write, n: map[*description.Media]int{}, held: map[*description.Media]*rtp.Packet{}}
		write = r.writePacket
	}
	// stamp is the RTP timestamp of tick n of a clock of rate Hz.
	stamp := func(n int, rate int64) uint32 {
		wrap := -(int64(opts.WrapAfter) / int64(time.Millisecond) * rate / 1000)
		return uint32(int64(n) + wrap + opts.Clock.rtpTicks(rate)) //nolint:gosec // RTP timestamps wrap by design
	}
	vm := medias["video"]
	venc := &rtph264.Encoder{PayloadType: 96, PayloadMaxSize: 1400, PacketizationMode: 1}
	_ = venc.Init()
	var aenc interface {
		Encode([][]byte) ([]*rtp.Packet, error)
	}
	var ulaw *rtpsimpleaudio.Encoder
	switch opts.Audio {
	case "", "pcmu":
		ulaw = &rtpsimpleaudio.Encoder{PayloadType: 0}
		_ = ulaw.Init()
	case "aac":
		enc := &rtpmpeg4audio.Encoder{PayloadType: 97, SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3}
		_ = enc.Init()
		aenc = enc
	case "latm":
		enc := &rtpfragmented.Encoder{PayloadType: 98}
		_ = enc.Init()
		aenc = latmEncoder{enc: enc, conf: medias["audio"].Formats[0].(*format.MPEG4AudioLATM).StreamMuxConfig}
	}
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var frames, audioChunks, aacFrames int
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		elapsed := time.Since(start)
		for ; time.Duration(frames)*40*time.Millisecond <= elapsed; frames++ {
			au := fx.Video[frames%len(fx.Video)]
			if opts.Inband && au[0][0]&0x1f == 5 {
				au = append([][]byte{fx.SPS, fx.PPS}, au...)
			}
			if paused.Load() {
				continue
			}
			pkts, err := venc.Encode(au)
			if err != nil {
				continue
			}
			for _, p := range pkts {
				p.Timestamp = stamp(frames*3600, 90000)
				if write(vm, p) == nil {
					sentVideo.Add(1)
				}
			}
		}
		am := medias["audio"]
		if ulaw != nil {
			for ; time.Duration(audioChunks)*20*time.Millisecond <= elapsed; audioChunks++ {
				if paused.Load() {
					continue
				}
				off := (audioChunks * 160) % (len(fx.ULaw) - 160)
				p, err := ulaw.Encode(fx.ULaw[off : off+160])
				if err == nil {
					p.Timestamp = stamp(audioChunks*160, 8000)
					_ = write(am, p)
				}
			}
		}
		if aenc != nil {
			for ; time.Duration(aacFrames)*1024*time.Second/48000 <= elapsed; aacFrames++ {
				if paused.Load() {
					continue
				}
				pkts, err := aenc.Encode([][]byte{fx.AAC[aacFrames%len(fx.AAC)]})
				if err != nil {
					continue
				}
				for _, p := range pkts {
					p.Timestamp = stamp(aacFrames*1024, 48000)
					_ = write(am, p)
				}
			}
		}
	}
}

// latmEncoder packs one AAC access unit per AudioMuxElement (RFC 6416 §6.1, cpresent=0).
type latmEncoder struct {
	enc  *rtpfragmented.Encoder
	conf *mpeg4audio.StreamMuxConfig
}

func (l latmEncoder) Encode(aus [][]byte) ([]*rtp.Packet, error) {
	el := mpeg4audio.AudioMuxElement{StreamMuxConfig: l.conf, Payloads: [][][][]byte{{{aus[0]}}}}
	buf, err := el.Marshal()
	if err != nil {
		return nil, err
	}
	return l.enc.Encode(buf)
}

type cameraHandler struct{ e *Camera }

func (h *cameraHandler) check(sc *gortsplib.ServerConn, req *base.Request) (*base.Response, error) {
	e := h.e
	if e.opts.User == "" {
		return nil, nil
	}
	if !sc.VerifyCredentials(req, e.opts.User, e.opts.Pass) {
		if _, ok := req.Header["Authorization"]; ok {
			e.Refused.Add(1)
		}
		return &base.Response{StatusCode: base.StatusUnauthorized}, liberrors.ErrServerAuth{}
	}
	return nil, nil
}

func (h *cameraHandler) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	h.e.Describes.Add(1)
	if res, err := h.check(ctx.Conn, ctx.Request); res != nil {
		return res, nil, err
	}
	if ctx.Path != "/stream" {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	return &base.Response{StatusCode: base.StatusOK}, h.e.stream, nil
}

func (h *cameraHandler) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if res, err := h.check(ctx.Conn, ctx.Request); res != nil {
		return res, nil, err
	}
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	return &base.Response{StatusCode: base.StatusOK}, h.e.stream, nil
}

func (h *cameraHandler) OnPlay(*gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	h.e.Plays.Add(1)
	return &base.Response{StatusCode: base.StatusOK}, nil
}

func (h *cameraHandler) OnDecodeError(*gortsplib.ServerHandlerOnDecodeErrorCtx)           {}
func (h *cameraHandler) OnStreamWriteError(*gortsplib.ServerHandlerOnStreamWriteErrorCtx) {}
func (h *cameraHandler) OnPacketsLost(*gortsplib.ServerHandlerOnPacketsLostCtx)           {}

// selfSignedTLS makes a certificate for 127.0.0.1 that no one signed, as cameras have.
func selfSignedTLS(t testing.TB) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "camera"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
}
