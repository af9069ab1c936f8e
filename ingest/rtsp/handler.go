package rtsp

import (
	"errors"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/auth"
)

// handler receives gortsplib's server callbacks. gortsplib calls the connection callbacks
// (OnConnOpen, OnConnClose, OnDescribe) from the connection's goroutine and the session
// callbacks from the session's goroutine; they must not block for long.
type handler struct{ s *Server }

// OnConnOpen implements gortsplib.ServerHandlerOnConnOpen.
func (h *handler) OnConnOpen(ctx *gortsplib.ServerHandlerOnConnOpenCtx) {
	h.s.mu.Lock()
	h.s.conns[ctx.Conn] = &connState{remote: remoteAddr(ctx.Conn)}
	h.s.mu.Unlock()
}

// OnConnClose implements gortsplib.ServerHandlerOnConnClose: a connection that was asked for
// credentials and left without giving valid ones is a refused attempt.
func (h *handler) OnConnClose(ctx *gortsplib.ServerHandlerOnConnCloseCtx) {
	h.s.mu.Lock()
	cs := h.s.conns[ctx.Conn]
	delete(h.s.conns, ctx.Conn)
	h.s.mu.Unlock()
	if cs != nil && cs.challenged && !cs.admitted && !cs.refused {
		h.s.opts.Gate.Refused(auth.ErrMissingToken, sfu.ProtocolRTSP, cs.remote)
	}
}

// OnSessionClose implements gortsplib.ServerHandlerOnSessionClose: the session's participant
// leaves. gortsplib calls no packet callback of the session after this.
func (h *handler) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	if sess := h.s.untrack(ctx.Session); sess != nil {
		sess.end(ctx.Error)
	}
}

// OnDescribe implements gortsplib.ServerHandlerOnDescribe: the SDP of a participant's tracks.
func (h *handler) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	t, res, err := h.s.authorize(ctx.Conn, ctx.Request, ctx.Path, ctx.Query, auth.ActionSubscribe)
	if res != nil {
		return res, nil, err
	}
	desc, _, res, err := h.s.describe(t)
	if res != nil {
		return res, nil, err
	}
	body, err := desc.Marshal(false)
	if err != nil {
		return &base.Response{StatusCode: base.StatusInternalServerError}, nil, err
	}
	return &base.Response{StatusCode: base.StatusOK, Body: body}, nil, nil
}

// OnAnnounce implements gortsplib.ServerHandlerOnAnnounce: a publisher describes its tracks.
func (h *handler) OnAnnounce(ctx *gortsplib.ServerHandlerOnAnnounceCtx) (*base.Response, error) {
	t, res, err := h.s.authorize(ctx.Conn, ctx.Request, ctx.Path, ctx.Query, auth.ActionPublish)
	if res != nil {
		return res, err
	}
	return h.s.announce(ctx, t)
}

// OnSetup implements gortsplib.ServerHandlerOnSetup.
func (h *handler) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if ctx.Transport == gortsplib.TransportTCP && !h.s.cfg.TCP() ||
		ctx.Transport == gortsplib.TransportUDPMulticast {
		return &base.Response{StatusCode: base.StatusUnsupportedTransport}, nil, nil
	}
	if ctx.Session.State() == gortsplib.ServerSessionStatePreRecord {
		if _, ok := h.s.sessionOf(ctx.Session).(*publisher); !ok {
			return &base.Response{StatusCode: base.StatusBadRequest}, nil, errors.New("no announced session")
		}
		return &base.Response{StatusCode: base.StatusOK}, nil, nil
	}
	// Play: the first SETUP makes the session's stream, the next ones return it.
	if pl, ok := h.s.sessionOf(ctx.Session).(*player); ok {
		return &base.Response{StatusCode: base.StatusOK}, pl.stream, nil
	}
	t, res, err := h.s.authorize(ctx.Conn, ctx.Request, ctx.Path, ctx.Query, auth.ActionSubscribe)
	if res != nil {
		return res, nil, err
	}
	pl, res, err := h.s.newPlayer(ctx.Session, ctx.Conn, t)
	if res != nil {
		return res, nil, err
	}
	return &base.Response{StatusCode: base.StatusOK}, pl.stream, nil
}

// OnPlay implements gortsplib.ServerHandlerOnPlay.
func (h *handler) OnPlay(ctx *gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	pl, ok := h.s.sessionOf(ctx.Session).(*player)
	if !ok {
		return &base.Response{StatusCode: base.StatusBadRequest}, liberrors.ErrServerInvalidState{}
	}
	res, err := pl.play()
	if err == nil {
		pl.batch(ctx.Conn)
	}
	return res, err
}

// OnRecord implements gortsplib.ServerHandlerOnRecord.
func (h *handler) OnRecord(ctx *gortsplib.ServerHandlerOnRecordCtx) (*base.Response, error) {
	pub, ok := h.s.sessionOf(ctx.Session).(*publisher)
	if !ok {
		return &base.Response{StatusCode: base.StatusBadRequest}, liberrors.ErrServerInvalidState{}
	}
	return pub.record()
}

// OnPacketsLost implements gortsplib.ServerHandlerOnPacketsLost (counted for stream.stats).
func (h *handler) OnPacketsLost(ctx *gortsplib.ServerHandlerOnPacketsLostCtx) {
	if pub, ok := h.s.sessionOf(ctx.Session).(*publisher); ok {
		pub.lost.Add(ctx.Lost)
	}
}

// OnDecodeError implements gortsplib.ServerHandlerOnDecodeError (counted, never logged per
// packet).
func (h *handler) OnDecodeError(ctx *gortsplib.ServerHandlerOnDecodeErrorCtx) {
	if pub, ok := h.s.sessionOf(ctx.Session).(*publisher); ok {
		pub.decodeErrors.Add(1)
	}
}

// OnStreamWriteError implements gortsplib.ServerHandlerOnStreamWriteError: a player's write
// queue overflowed (counted).
func (h *handler) OnStreamWriteError(ctx *gortsplib.ServerHandlerOnStreamWriteErrorCtx) {
	if pl, ok := h.s.sessionOf(ctx.Session).(*player); ok {
		pl.writeErrors.Add(1)
	}
}

// OnResponse implements gortsplib.ServerHandlerOnResponse. gortsplib has made a playing
// session a reader of its stream by the time it sends the answer to PLAY: the player may write.
func (h *handler) OnResponse(sc *gortsplib.ServerConn, res *base.Response) {
	if res.StatusCode != base.StatusOK || sc.Session() == nil {
		return
	}
	if pl, ok := h.s.sessionOf(sc.Session()).(*player); ok {
		pl.markActive()
	}
}
