package srt

import "testing"

func TestParseStreamID(t *testing.T) {
	for _, c := range []struct {
		in   string
		want streamID
		bad  bool
	}{
		{in: "publish:room", want: streamID{mode: modePublish, room: "room"}},
		{in: "publish:room/cam", want: streamID{mode: modePublish, room: "room", identity: "cam"}},
		{in: "read:room/cam", want: streamID{mode: modeRead, room: "room", identity: "cam"}},
		{in: "publish:room/cam?token=a.b.c", want: streamID{mode: modePublish, room: "room", identity: "cam", secret: "a.b.c"}},
		{in: "publish:room?key=sk_x", want: streamID{mode: modePublish, room: "room", secret: "sk_x"}},
		{in: "publish:sk_abcdef", want: streamID{mode: modePublish, secret: "sk_abcdef"}},
		{in: "publish:a.b.c", want: streamID{mode: modePublish, secret: "a.b.c"}},
		{in: "#!::r=room/cam,m=publish", want: streamID{mode: modePublish, room: "room", identity: "cam"}},
		{in: "#!::r=room,m=request,u=me,s=a.b.c", want: streamID{mode: modeRead, room: "room", user: "me", secret: "a.b.c"}},
		{in: "#!::r=room/cam,m=request", want: streamID{mode: modeRead, room: "room", identity: "cam"}},
		{in: "#!::r=room,m=publish,u=cam", want: streamID{mode: modePublish, room: "room", user: "cam"}},
		{in: "#!::m=publish,s=sk_k", want: streamID{mode: modePublish, secret: "sk_k"}},
		{in: "", bad: true},
		{in: "room", bad: true},
		{in: "play:room", bad: true},
		{in: "publish:", bad: true},
		{in: "#!::m=publish", bad: true},
		{in: "#!::r=room,m=delete", bad: true},
	} {
		got, err := parseStreamID(c.in)
		if (err != nil) != c.bad || (!c.bad && got != c.want) {
			t.Errorf("%q: got %+v %v, want %+v bad=%v", c.in, got, err, c.want, c.bad)
		}
	}
}

func FuzzParseStreamID(f *testing.F) {
	for _, s := range []string{"publish:room/cam?token=a.b.c", "#!::r=room,m=request,u=me,s=x", "read:sk_x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := parseStreamID(s)
		if err == nil && id.mode != modePublish && id.mode != modeRead {
			t.Fatalf("%q: mode %q", s, id.mode)
		}
	})
}
