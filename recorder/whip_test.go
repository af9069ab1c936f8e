package recorder

import (
	"context"
	"net/http/httptest"
	"sync"

	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/auth"
	"github.com/sluice-media/sluice/sfu/rtc"
)

// whipServer serves WHIP into the env's hub on loopback.
func (e *env) whipServer() string {
	e.t.Helper()
	engine, err := rtc.NewEngine(rtc.Config{Port: 0, BindIP: "127.0.0.1", ICETCP: true}, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	gate := api.NewGate(auth.NewVerifier(auth.Config{}, nil), e.hub.Emitter())
	srv := rtc.NewServer(engine, e.hub, gate, nil)
	a := api.New(api.Options{Hub: e.hub, Gate: gate})
	srv.Register(a)
	e.rec.Register(a, gate)
	hs := httptest.NewServer(a.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = srv.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		wg.Wait()
		hs.Close()
		_ = engine.Close()
	})
	return hs.URL
}
