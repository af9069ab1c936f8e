// Package ingest keeps the ingest definitions (RTMP stream keys, RTSP pull sources) that the
// protocol servers in ingest/rtmp and ingest/rtsp serve.
package ingest

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/sluice-media/sluice/sfu"
)

// Ingest types.
const (
	TypeRTSPPull = "rtsp_pull"
	TypeRTMP     = "rtmp"
	TypeRTSPPush = "rtsp_push"
	TypeWHIP     = "whip"
	TypeSRT      = "srt"
)

// Definition is one entry of the `ingests:` config list (and of POST /v1/ingests).
type Definition struct {
	ID       string `yaml:"id" json:"id"`
	Type     string `yaml:"type" json:"type"`
	Room     string `yaml:"room" json:"room"`
	Identity string `yaml:"identity" json:"identity,omitempty"`
	// URL is the camera URL of an rtsp_pull ingest; it may carry user:password.
	URL string `yaml:"url" json:"url,omitempty"`
	// Transport of an rtsp_pull ingest: auto (UDP, then TCP), udp or tcp.
	Transport string `yaml:"transport" json:"transport,omitempty"`
	// Override lets a new RTMP publisher on a live key take over from the old one.
	Override bool `yaml:"override" json:"override,omitempty"`
	// StreamKey fixes the key of a publish ingest (rtmp, rtsp_push) instead of a generated one;
	// at least 16 characters.
	StreamKey string `yaml:"stream_key" json:"stream_key,omitempty"`
	// Passphrase, on an srt ingest, makes the publisher encrypt (AES) with it: 10 to 79
	// characters. A secret: never in listings, events or logs.
	Passphrase string `yaml:"passphrase" json:"passphrase,omitempty"`
}

// Validate reports the first invalid field of one definition.
func (d Definition) Validate() error {
	if err := sfu.ValidateName(d.Room); err != nil {
		return fmt.Errorf("room: %w", err)
	}
	if d.Identity != "" {
		if err := sfu.ValidateName(d.Identity); err != nil {
			return fmt.Errorf("identity: %w", err)
		}
	}
	if d.ID != "" {
		if err := sfu.ValidateName(d.ID); err != nil {
			return fmt.Errorf("id: %w", err)
		}
	}
	if d.Passphrase != "" && d.Type != TypeSRT {
		return fmt.Errorf("passphrase: only srt ingests have one")
	}
	switch d.Type {
	case TypeRTSPPull:
		if d.StreamKey != "" {
			return fmt.Errorf("stream_key: only publish ingests (rtmp, rtsp_push, srt) have one")
		}
		u, err := url.Parse(d.URL)
		if err != nil || (u.Scheme != "rtsp" && u.Scheme != "rtsps") || u.Host == "" {
			return fmt.Errorf("url: must be rtsp://[user:pass@]host[:port]/path or rtsps://…")
		}
		switch strings.ToLower(d.Transport) {
		case "", "auto", "udp", "tcp":
		default:
			return fmt.Errorf("transport: %q is not auto, udp or tcp", d.Transport)
		}
	case TypeRTMP, TypeRTSPPush, TypeWHIP, TypeSRT:
		if d.StreamKey != "" && len(d.StreamKey) < 16 {
			return fmt.Errorf("stream_key: must be at least 16 characters")
		}
		if n := len(d.Passphrase); n != 0 && (n < 10 || n > 79) {
			return fmt.Errorf("passphrase: SRT takes 10 to 79 characters")
		}
	default:
		return fmt.Errorf("type: %q is not rtsp_pull, rtmp, rtsp_push, srt or whip", d.Type)
	}
	return nil
}
