package rtsp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
	"github.com/pion/rtcp"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/netguard"
)

// pullWorker is one connection to a camera: DESCRIBE, SETUP, PLAY, then the camera's tracks in
// its room until the connection drops. Run returns why it ended; the supervisor (pulls.go)
// decides about retries. A worker is used once.
type pullWorker struct {
	ing      ingest.Ingest
	hub      *sfu.Hub
	cfg      Config
	log      *slog.Logger
	dial     func(ctx context.Context, network, address string) (net.Conn, error)
	clock    func() time.Time
	identity string

	// connected is called once the camera plays and its tracks are published.
	connected func()
	// unsupported records the camera's tracks that cannot be published.
	unsupported func(codecs []string)

	lost atomic.Uint64
}

// Run connects to the camera and serves it until ctx ends (nil) or the connection fails.
// Errors never carry the URL's password.
func (w *pullWorker) Run(ctx context.Context) error {
	u, err := base.ParseURL(w.ing.URL)
	if err != nil {
		return errors.New("the camera URL cannot be parsed")
	}
	c := &gortsplib.Client{
		Scheme:       u.Scheme,
		Host:         u.Host,
		Transport:    clientTransport(w.ing.Transport),
		ReadTimeout:  w.cfg.ReadTimeout,
		WriteTimeout: w.cfg.ReadTimeout,
		// Cameras serve RTSPS with self-signed certificates; the stream is still encrypted.
		TLSConfig:   &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, //nolint:gosec // cameras have self-signed certificates
		DialContext: w.dial,
		UserAgent:   "sluice",
		OnTransportSwitch: func(err error) {
			w.log.Info("camera: no UDP packets, switching to TCP", "reason", err)
		},
		OnPacketsLost: func(n uint64) { w.lost.Add(n) },
		OnDecodeError: func(error) {},
	}
	if err := c.Start2(); err != nil {
		return err
	}
	var waitErr error
	waited := make(chan struct{})
	go func() { waitErr = c.Wait(); close(waited) }()
	stop := context.AfterFunc(ctx, c.Close) // unblocks DESCRIBE, SETUP and PLAY
	defer func() {
		stop()
		c.Close()
		<-waited
	}()

	inputs, err := w.play(c, u)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		w.log.Debug("camera setup failed", "err", err)
		return w.scrub(classifySetup(classify(err), u.Host))
	}
	return w.serve(ctx, c, u, inputs, waited, &waitErr)
}

// play describes the camera, sets up every media with a codec sluice takes and plays them.
func (w *pullWorker) play(c *gortsplib.Client, u *base.URL) ([]*input, error) {
	desc, _, err := c.Describe(u)
	if err != nil {
		return nil, err
	}
	inputs, unsupported := buildInputs(desc, w.clock, w.log)
	w.unsupported(unsupported)
	if len(inputs) == 0 {
		return nil, fmt.Errorf("%w (the camera offers %s)", ErrNoTracks, strings.Join(unsupported, ", "))
	}
	for _, in := range inputs {
		if _, err := c.Setup(desc.BaseURL, in.media, 0, 0); err != nil {
			return nil, err
		}
		c.OnPacketRTP(in.media, in.format, in.onRTP)
		c.OnPacketRTCP(in.media, func(p rtcp.Packet) { in.onRTCP(p) })
	}
	if _, err := c.Play(nil); err != nil {
		return nil, err
	}
	return inputs, nil
}

// buildInputs picks, for each media of a description, the first format sluice publishes; the
// medias without one are listed as unsupported (and logged).
func buildInputs(desc *description.Session, clock func() time.Time, log *slog.Logger) ([]*input, []string) {
	var inputs []*input
	unsupported := []string{}
	for _, m := range desc.Medias {
		if m.IsBackChannel {
			continue
		}
		var chosen *input
		var why error
		for _, f := range m.Formats {
			in, err := newInput(m, f, clock)
			if err == nil {
				chosen = in
				break
			}
			if why == nil {
				why = err
			}
		}
		if chosen != nil {
			chosen.log = log.With("media", m.Type)
			inputs = append(inputs, chosen)
			continue
		}
		label := string(m.Type)
		if len(m.Formats) > 0 {
			label = codecLabel(m.Formats[0])
		}
		unsupported = append(unsupported, label)
		log.Warn("track not published: unsupported codec", "media", m.Type, "codec", label, "reason", why)
	}
	return inputs, unsupported
}

// serve publishes the camera's tracks and keeps them until the connection ends.
func (w *pullWorker) serve(ctx context.Context, c *gortsplib.Client, u *base.URL, inputs []*input, waited <-chan struct{}, waitErr *error) error {
	p, err := w.hub.Join(w.ing.Room, sfu.ParticipantSpec{
		Identity:   w.identity,
		Name:       w.ing.ID,
		Kind:       sfu.ParticipantRTSPPull,
		RemoteAddr: u.Host,
	})
	if err != nil {
		return fmt.Errorf("joining room %s: %w", w.ing.Room, err)
	}
	reason, cause := sfu.ReasonError, error(nil)
	defer func() {
		// Producer first: stop reading the camera, then leave (tracks end, viewers see it).
		c.Close()
		<-waited
		p.Close(reason, cause)
	}()
	for _, in := range inputs {
		t, err := p.Publish(in.trackSpec())
		if err != nil {
			cause = err
			return fmt.Errorf("publishing %s: %w", in.codec.Name, err)
		}
		if err := in.attach(t); err != nil {
			cause = err
			return err
		}
	}
	if _, err := p.StartStream(sfu.StreamSpec{
		Direction: sfu.DirectionPublish,
		Protocol:  sfu.ProtocolRTSP,
		// every track of the SDP is published above
		ExpectTracks: len(inputs),
		RemoteAddr:   u.Host,
		Stats:        func() sfu.ProtocolStats { return receivedStats(&c.Stats().Session, w.lost.Load()) },
	}); err != nil {
		cause = err
		return err
	}
	w.connected()

	start := w.clock()
	tick := time.NewTicker(w.cfg.ReadTimeout / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			reason = sfu.ReasonServerShutdown
			if errors.Is(context.Cause(ctx), errStopped) {
				reason = sfu.ReasonRemoved
			}
			return nil
		case <-waited:
			cause = w.scrub(classify(*waitErr))
			if errors.Is(cause, ErrNoMedia) {
				reason = sfu.ReasonNoMediaTimeout
			}
			return cause
		case <-p.Done():
			return fmt.Errorf("%w (%s)", ErrRemoved, p.LeaveReason())
		case <-tick.C:
			if silent := w.clock().Sub(lastPacket(inputs, start)); silent >= w.cfg.ReadTimeout {
				reason, cause = sfu.ReasonNoMediaTimeout, fmt.Errorf("%w for %v", ErrNoMedia, silent.Round(time.Second))
				return cause
			}
		}
	}
}

// lastPacket returns when the camera last sent RTP on any track (start if never).
func lastPacket(inputs []*input, start time.Time) time.Time {
	last := start
	for _, in := range inputs {
		if n := in.lastPacketAt.Load(); n != 0 {
			if t := time.Unix(0, n); t.After(last) {
				last = t
			}
		}
	}
	return last
}

// classify maps gortsplib's errors to ours: a 401 is an authentication failure, a read timeout
// is no media.
func classify(err error) error {
	var status liberrors.ErrClientBadStatusCode
	switch {
	case errors.As(err, &status) && status.Code == base.StatusUnauthorized:
		return ErrAuth
	case errors.As(err, new(liberrors.ErrClientUDPTimeout)), errors.As(err, new(liberrors.ErrClientTCPTimeout)):
		return fmt.Errorf("%w (%w)", ErrNoMedia, err)
	}
	return err
}

// classifySetup hides why a camera could not be set up when no RTSP server answered: a
// closed port, a filtered one and an open one speaking another protocol give the same error,
// so that pull ingests cannot map a network. Refusals of the outbound policy, and answers of
// a real RTSP server (status codes, authentication, tracks), are kept.
func classifySetup(err error, host string) error {
	var status liberrors.ErrClientBadStatusCode
	switch {
	case errors.Is(err, netguard.ErrRefused), errors.Is(err, ErrAuth), errors.Is(err, ErrNoTracks), errors.As(err, &status):
		return err
	}
	return &noServerError{host: host, cause: err}
}

// noServerError is a setup that failed before an RTSP server answered.
type noServerError struct {
	host  string
	cause error
}

func (e *noServerError) Error() string { return "no RTSP server answered at " + e.host }
func (e *noServerError) Unwrap() error { return ErrNoServer }

// scrub returns err with the camera URL's user name and password masked out of its message.
func (w *pullWorker) scrub(err error) error {
	if err == nil {
		return nil
	}
	u, perr := url.Parse(w.ing.URL)
	if perr != nil || u.User == nil {
		return err
	}
	msg := err.Error()
	clean := msg
	if pass, ok := u.User.Password(); ok && pass != "" {
		clean = strings.ReplaceAll(clean, pass, "***")
		if esc := url.PathEscape(pass); esc != pass {
			clean = strings.ReplaceAll(clean, esc, "***")
		}
	}
	if clean == msg {
		return err
	}
	return &scrubbedError{msg: clean, err: err}
}

// scrubbedError shows a message without secrets and keeps the cause for errors.Is.
type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }

// clientTransport maps the ingest's transport to gortsplib's: nil is auto (UDP, then TCP when
// no UDP packet arrives).
func clientTransport(t string) *gortsplib.Transport {
	var v gortsplib.Transport
	switch strings.ToLower(t) {
	case "udp":
		v = gortsplib.TransportUDP
	case "tcp":
		v = gortsplib.TransportTCP
	default:
		return nil
	}
	return &v
}

// pullReason is the machine-readable reason of a failed or dropped pull.
func pullReason(err error, wasConnected bool) string {
	switch {
	case errors.Is(err, ErrAuth):
		return "authentication_failed"
	case errors.Is(err, ErrNoMedia):
		return sfu.ReasonNoMediaTimeout
	case errors.Is(err, ErrNoTracks):
		return "unsupported_codec"
	case errors.Is(err, ErrRemoved):
		return sfu.ReasonRemoved
	case wasConnected:
		return "connection_lost"
	}
	return "connection_failed"
}
