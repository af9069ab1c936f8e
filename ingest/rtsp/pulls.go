package rtsp

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/sfu"
)

// pullManager runs one supervisor per rtsp_pull ingest. It is the ingest.Handler of that type:
// Start may come before Run (the store starts the existing ingests when the handler is
// registered), in which case the pull waits for Run; Stop ends a pull and waits for it. Safe for
// concurrent use.
type pullManager struct {
	s *Server

	mu      sync.Mutex
	ctx     context.Context // set by run; nil before
	stopped bool
	pending map[string]ingest.Ingest
	pulls   map[string]*pullHandle
	wg      sync.WaitGroup
}

type pullHandle struct {
	cancel context.CancelCauseFunc
	done   chan struct{}
}

func newPullManager(s *Server) *pullManager {
	return &pullManager{s: s, pending: map[string]ingest.Ingest{}, pulls: map[string]*pullHandle{}}
}

// Start implements ingest.Handler: it starts pulling the camera (or queues it until Run).
func (m *pullManager) Start(ing ingest.Ingest) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.stopped:
	case m.ctx == nil:
		m.pending[ing.ID] = ing
	default:
		m.launchLocked(ing)
	}
}

// Stop implements ingest.Handler: it ends the pull (its participant leaves with reason
// removed, the ingest goes to disconnected) and waits for it.
func (m *pullManager) Stop(id string) {
	m.mu.Lock()
	delete(m.pending, id)
	h := m.pulls[id]
	delete(m.pulls, id)
	m.mu.Unlock()
	if h != nil {
		h.cancel(errStopped)
		<-h.done
	}
}

func (m *pullManager) launchLocked(ing ingest.Ingest) {
	if _, running := m.pulls[ing.ID]; running {
		return
	}
	ctx, cancel := context.WithCancelCause(m.ctx)
	h := &pullHandle{cancel: cancel, done: make(chan struct{})}
	m.pulls[ing.ID] = h
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(h.done)
		defer cancel(nil)
		m.s.supervise(ctx, ing)
	}()
}

// run starts the queued pulls, then at the end of ctx stops every pull and waits for them.
func (m *pullManager) run(ctx context.Context) {
	m.mu.Lock()
	m.ctx = ctx
	for _, ing := range m.pending {
		m.launchLocked(ing)
	}
	clear(m.pending)
	m.mu.Unlock()
	<-ctx.Done()
	m.mu.Lock()
	m.stopped = true
	m.mu.Unlock()
	m.wg.Wait()
}

// supervise pulls one camera for as long as ctx lasts: it runs a worker, and after any drop,
// refusal or timeout waits on the backoff and runs another. It owns the ingest's state and its
// ingest.state_changed events: connecting (first attempt), connected, reconnecting (after a
// failure, with the error; retries counts the attempts that failed since the last stable
// connection), and disconnected when the pull ends.
func (s *Server) supervise(ctx context.Context, ing ingest.Ingest) {
	log := s.log.With("ingest", ing.ID, "room", ing.Room, "url", ingest.RedactURL(ing.URL))
	identity := ing.Identity
	if identity == "" {
		identity = ing.ID
	}
	states := s.opts.Ingests
	retries := 0
	states.SetState(ing.ID, ingest.StateConnecting, 0, "", nil)
	log.Info("pulling camera", "transport", ing.Transport)
	for {
		var connectedAt time.Time
		w := &pullWorker{
			ing:      ing,
			hub:      s.opts.Hub,
			cfg:      s.cfg,
			log:      log,
			dial:     s.opts.Dial,
			clock:    s.clock,
			identity: identity,
			connected: func() {
				connectedAt = s.clock()
				states.SetState(ing.ID, ingest.StateConnected, retries, "", nil)
				log.Info("camera connected", "retries", retries)
			},
			unsupported: func(codecs []string) { states.SetUnsupported(ing.ID, codecs) },
		}
		err := w.Run(ctx)
		if ctx.Err() != nil {
			break
		}
		if err == nil {
			err = errors.New("the camera ended the stream")
		}
		wasConnected := !connectedAt.IsZero()
		if wasConnected && s.clock().Sub(connectedAt) >= s.backoff.Max {
			retries = 0 // a stable connection resets the schedule
		}
		retries++
		delay := s.backoff.Delay(retries, s.opts.Rand)
		reason := pullReason(err, wasConnected)
		log.Warn("camera unavailable; retrying", "reason", reason, "err", err, "retries", retries, "retry_in", delay.Round(time.Millisecond))
		states.SetState(ing.ID, ingest.StateReconnecting, retries, reason, err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		if ctx.Err() != nil {
			break
		}
	}
	reason := sfu.ReasonServerShutdown
	if errors.Is(context.Cause(ctx), errStopped) {
		reason = sfu.ReasonStopped
	}
	states.SetState(ing.ID, ingest.StateDisconnected, retries, reason, nil)
	log.Info("camera pull stopped", "reason", reason)
}
