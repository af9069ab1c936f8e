package rtmp

import (
	"errors"
	"net"
	"net/url"
	"strings"
)

// Default ports of the schemes: RTMP's registered port, and RTMPS as the platforms serve it
// (YouTube, Facebook, Twitch all take RTMPS on 443).
const (
	DefaultPort      = "1935"
	DefaultTLSPort   = "443"
	redactedKey      = "***"
	maxTargetURLSize = 2048
)

// ErrInvalidURL is returned by ParseURL. Its messages never quote the URL: it holds a stream
// key.
var ErrInvalidURL = errors.New("invalid rtmp url")

// Target is where a broadcast publishes: an rtmp:// or rtmps:// URL split the way RTMP clients
// (OBS, ffmpeg) split it: the application is the first path segment, the stream name is the
// rest of the path with the query (Facebook's keys carry one). The stream name is the
// platform's stream key: a secret that only the wire may carry. Values are immutable.
type Target struct {
	Scheme string // rtmp or rtmps
	Host   string // host name or IP, without port: TLS server name
	Addr   string // host:port to dial
	App    string
	Stream string // the stream key (secret)
	TCURL  string // scheme://host[:port]/app, the tcUrl of connect
	shown  string // the redacted URL
}

// ParseURL parses and checks a destination URL. Errors say what is wrong without quoting it.
func ParseURL(raw string) (Target, error) {
	bad := func(why string) (Target, error) {
		return Target{}, errors.Join(ErrInvalidURL, errors.New(why))
	}
	if len(raw) > maxTargetURLSize {
		return bad("the url is longer than 2048 bytes")
	}
	if strings.ContainsAny(raw, " \t\r\n") {
		return bad("the url contains white space")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return bad("the url cannot be parsed") // url.Error quotes the URL: never wrap it
	}
	scheme := strings.ToLower(u.Scheme)
	port := DefaultPort
	switch scheme {
	case "rtmp":
	case "rtmps":
		port = DefaultTLSPort
	default:
		return bad("the scheme must be rtmp:// or rtmps://")
	}
	if u.User != nil {
		return bad("credentials in the url (user:password@) are not supported: the stream key goes in the path")
	}
	if u.Fragment != "" || u.Opaque != "" {
		return bad("the url must look like rtmp://host/app/STREAM_KEY")
	}
	host := u.Hostname()
	if host == "" {
		return bad("the url has no host")
	}
	if p := u.Port(); p != "" {
		port = p
	}
	path := strings.TrimPrefix(u.EscapedPath(), "/")
	app, stream, _ := strings.Cut(path, "/")
	if app == "" {
		return bad("the url has no application: it must look like rtmp://host/app/STREAM_KEY")
	}
	if u.RawQuery != "" {
		stream += "?" + u.RawQuery
	}
	if stream == "" {
		return bad("the url has no stream key: it must look like rtmp://host/app/STREAM_KEY")
	}
	hostport := u.Host // as typed, with the port when one was given
	t := Target{
		Scheme: scheme,
		Host:   host,
		Addr:   net.JoinHostPort(host, port),
		App:    app,
		Stream: stream,
		TCURL:  scheme + "://" + hostport + "/" + app,
	}
	t.shown = t.TCURL + "/" + redactedKey
	return t, nil
}

// Redacted returns the URL without its stream key: rtmp://host/app/***.
func (t Target) Redacted() string { return t.shown }

// String implements fmt.Stringer with the redacted URL, so that a Target printed by mistake
// shows no key.
func (t Target) String() string { return t.shown }

// Scrub replaces every form of the stream key in s with ***: for messages that come from the
// server (an onStatus description may echo the stream name) or from libraries.
func (t Target) Scrub(s string) string {
	if t.Stream == "" {
		return s
	}
	for _, secret := range t.secrets() {
		if len(secret) >= 3 {
			s = strings.ReplaceAll(s, secret, redactedKey)
		}
	}
	return s
}

func (t Target) secrets() []string {
	key, _, _ := strings.Cut(t.Stream, "?")
	out := []string{t.Stream, key}
	if u, err := url.PathUnescape(key); err == nil && u != key {
		out = append(out, u)
	}
	if e := url.QueryEscape(key); e != key {
		out = append(out, e)
	}
	return out
}
