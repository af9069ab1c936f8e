package srt

import (
	"errors"
	"net/url"
	"strings"

	"github.com/sluice-media/sluice/ingest"
)

// Stream id modes.
const (
	modePublish = "publish"
	modeRead    = "read"
)

// streamID is what an SRT stream id asks for. Two forms are read:
//
//	publish:ROOM[/IDENTITY][?key=KEY|?token=TOKEN]   read:ROOM[/IDENTITY][?token=TOKEN]
//	publish:KEY_OR_TOKEN                              read:TOKEN
//	#!::r=ROOM[/IDENTITY],m=publish|request,u=USER,s=KEY_OR_TOKEN
//
// The second is the SRT Access Control form (Haivision's "SRT Access Control Guidelines":
// r resource, m mode, u user, s session), which SRS and MediaMTX also take; m=read is taken as
// request. A publisher's identity is IDENTITY, else USER; a reader reads IDENTITY ("" for the
// main publisher) as USER. A stream key or token in the stream id is a secret: never logged.
type streamID struct {
	mode     string
	room     string
	identity string
	user     string // u=
	secret   string // a stream key or an access token, if any
	audio    string // a reader's audio=aac: Opus converted to AAC
}

var errStreamID = errors.New("the stream id must be publish:<room>[/<identity>], read:<room>[/<identity>], publish:<key> or #!::r=<room>,m=publish|request[,s=<key>]")

// parseStreamID reads a stream id in either form.
func parseStreamID(s string) (streamID, error) {
	if rest, ok := strings.CutPrefix(s, "#!::"); ok {
		return parseAccessControl(rest)
	}
	mode, rest, ok := strings.Cut(s, ":")
	if !ok || (mode != modePublish && mode != modeRead) || rest == "" {
		return streamID{}, errStreamID
	}
	id := streamID{mode: mode}
	path, query, _ := strings.Cut(rest, "?")
	if query != "" {
		q, err := url.ParseQuery(query)
		if err != nil {
			return streamID{}, errStreamID
		}
		id.secret, id.audio = q.Get("key"), q.Get("audio")
		if t := q.Get("token"); t != "" {
			id.secret = t
		}
	}
	if id.secret == "" && ingest.IsSecret(path) {
		id.secret = path // a bare stream key or token
		return id, nil
	}
	id.room, id.identity, _ = strings.Cut(path, "/")
	return id, nil
}

func parseAccessControl(s string) (streamID, error) {
	var id streamID
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return streamID{}, errStreamID
		}
		switch k {
		case "r":
			id.room, id.identity, _ = strings.Cut(v, "/")
		case "m":
			switch v {
			case "publish":
				id.mode = modePublish
			case "request", "read":
				id.mode = modeRead
			default:
				return streamID{}, errStreamID
			}
		case "u":
			id.user = v
		case "s":
			id.secret = v
		case "audio":
			id.audio = v
		}
	}
	if id.mode == "" {
		id.mode = modeRead // the SRT guidelines' default
	}
	if id.room == "" && id.secret == "" {
		return streamID{}, errStreamID
	}
	return id, nil
}
