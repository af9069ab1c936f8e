package rtmp

import (
	"strings"
	"testing"
)

// FuzzParseURL: no panic, and an error never quotes the URL (it may hold a stream key).
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"rtmp://live.twitch.tv/app/live_123_abc", "rtmps://a.rtmps.youtube.com/live2/abcd-efgh", "rtmp://h:1/a/b?c=d", "rtmp://[::1]:1935/live/k", "rtmp://x/%zz/k"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tg, err := ParseURL(s)
		if err != nil {
			if len(s) > 12 && strings.Contains(err.Error(), s) {
				t.Fatalf("error quotes the url: %v", err)
			}
			return
		}
		if strings.Contains(tg.Redacted(), tg.Stream) && len(tg.Stream) >= 3 && !strings.Contains(tg.TCURL, tg.Stream) {
			t.Fatalf("redacted %q shows the key %q", tg.Redacted(), tg.Stream)
		}
	})
}
