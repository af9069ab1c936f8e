package ingest

import (
	"errors"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/auth"
)

// The shared key rules, in open mode and with auth keys: what each request is granted (room,
// identities, lock) or which auth error refuses it, with one auth.failed per refusal.
func TestKeysAuthorize(t *testing.T) {
	const secret = "a-secret-of-at-least-32-characters-long"
	em := sfu.NewLocalEmitter(0, nil)
	store, err := Open(t.TempDir(), nil, em, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	srt, _ := store.Create(Definition{Type: TypeSRT, Room: "studio"}, now)
	named, _ := store.Create(Definition{Type: TypeSRT, Room: "studio", Identity: "obs", Override: true}, now)
	rtmp, _ := store.Create(Definition{Type: TypeRTMP, Room: "studio"}, now)
	sign := func(g auth.Grants, identity string) string {
		tok, err := auth.Sign("app", secret, auth.Claims{Identity: identity, Grants: g, ExpiresAt: now.Add(time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	pubTok := sign(auth.Grants{Room: "studio", Publish: true}, "cam")
	anonTok := sign(auth.Grants{Room: "studio", Publish: true}, "")
	subTok := sign(auth.Grants{Room: "studio", Subscribe: true}, "alice")
	pub, sub := auth.ActionPublish, auth.ActionSubscribe
	for _, c := range []struct {
		name    string
		keyMode bool
		r       Request
		want    Grant // Ingest compared by id
		ing     string
		err     error
	}{
		{name: "open room", r: Request{Action: pub, Room: "studio", Identity: "cam"}, want: Grant{Room: "studio", Identity: "cam", Lock: "n/studio/cam"}},
		{name: "open read", r: Request{Action: sub, Room: "studio", Identity: "cam"}, want: Grant{Room: "studio", Identity: "cam"}},
		{name: "open bad room", r: Request{Action: pub, Room: "no room!"}, err: auth.ErrUnknownKey},
		{name: "open key-shaped room", r: Request{Action: pub, Room: "sk_gone"}, err: auth.ErrUnknownKey},
		{name: "open unknown key", r: Request{Action: pub, Secret: "sk_gone"}, err: auth.ErrUnknownKey},
		{name: "ingest key", r: Request{Action: pub, Secret: srt.StreamKey}, ing: srt.ID,
			want: Grant{Room: "studio", Identity: srt.ID, Lock: "i/" + srt.ID}},
		{name: "ingest key names the identity", r: Request{Action: pub, Room: "studio", Identity: "x", Secret: named.StreamKey}, ing: named.ID,
			want: Grant{Room: "studio", Identity: "obs", Lock: "i/" + named.ID}},
		{name: "ingest key, identity from the request", r: Request{Action: pub, Room: "studio", Identity: "x", Secret: srt.StreamKey}, ing: srt.ID,
			want: Grant{Room: "studio", Identity: "x", Lock: "i/" + srt.ID}},
		{name: "ingest key of another room", r: Request{Action: pub, Room: "other", Secret: srt.StreamKey}, err: auth.ErrPermissionDenied},
		{name: "ingest key reads", r: Request{Action: sub, Secret: srt.StreamKey}, err: auth.ErrPermissionDenied},
		{name: "key of another protocol", keyMode: true, r: Request{Action: pub, Secret: rtmp.StreamKey}, err: auth.ErrUnknownKey},
		{name: "ingest key in key mode", keyMode: true, r: Request{Action: pub, Secret: srt.StreamKey}, ing: srt.ID,
			want: Grant{Room: "studio", Identity: srt.ID, Lock: "i/" + srt.ID}},
		{name: "no token", keyMode: true, r: Request{Action: pub, Room: "studio"}, err: auth.ErrMissingToken},
		{name: "token publishes", keyMode: true, r: Request{Action: pub, Secret: pubTok},
			want: Grant{Room: "studio", Identity: "cam", Lock: "t/studio/cam"}},
		{name: "token identity wins", keyMode: true, r: Request{Action: pub, Room: "studio", Identity: "x", Secret: pubTok},
			want: Grant{Room: "studio", Identity: "cam", Lock: "t/studio/cam"}},
		{name: "anonymous token", keyMode: true, r: Request{Action: pub, Secret: anonTok},
			want: Grant{Room: "studio", Lock: "t/studio/#" + KeyHash(anonTok)}},
		{name: "token for another room", keyMode: true, r: Request{Action: pub, Room: "other", Secret: pubTok}, err: auth.ErrPermissionDenied},
		{name: "publish token reads", keyMode: true, r: Request{Action: sub, Secret: pubTok}, err: auth.ErrPermissionDenied},
		{name: "token reads", keyMode: true, r: Request{Action: sub, Room: "studio", Identity: "cam", Secret: subTok},
			want: Grant{Room: "studio", Identity: "cam", Self: "alice"}},
		{name: "garbage token", keyMode: true, r: Request{Action: sub, Secret: "a.b.c"}, err: auth.ErrInvalidToken},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := auth.Config{}
			if c.keyMode {
				cfg.Keys = map[string]string{"app": secret}
			}
			em := sfu.NewLocalEmitter(0, nil)
			k := Keys{Gate: api.NewGate(auth.NewVerifier(cfg, nil), em), Ingests: store, Types: []string{TypeSRT}}
			c.r.Protocol, c.r.Remote = sfu.ProtocolSRT, "192.0.2.1:5000"
			g, err := k.Authorize(c.r)
			failed := 0
			for _, e := range em.Events(0) {
				if e.Type == sfu.EventAuthFailed && e.Protocol == sfu.ProtocolSRT {
					failed++
				}
			}
			if c.err != nil {
				if !errors.Is(err, c.err) || failed != 1 {
					t.Fatalf("err %v (%d auth.failed), want %v and one auth.failed", err, failed, c.err)
				}
				return
			}
			if err != nil || failed != 0 {
				t.Fatalf("refused: %v (%d auth.failed)", err, failed)
			}
			ing := ""
			if g.Ingest != nil {
				ing = g.Ingest.ID
			}
			g.Ingest = nil
			if g != c.want || ing != c.ing {
				t.Fatalf("grant %+v ingest %q, want %+v ingest %q", g, ing, c.want, c.ing)
			}
		})
	}
}
