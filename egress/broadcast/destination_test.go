package broadcast

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/sluice-media/sluice/egress/rtmp"
	"github.com/sluice-media/sluice/sfu"
)

// TestClassify: refusals by the destination are final, drops are retried.
func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name    string
		err     error
		refused bool
		code    string
	}{
		{"publish _error", &rtmp.StatusError{Command: "publish", Code: "NetStream.Publish.BadName"}, true, "destination_refused"},
		{"closed before publish", fmt.Errorf("publish: %w", rtmp.ErrRefusedByClose), true, "destination_refused"},
		{"unknown host", &net.DNSError{Err: "no such host", Name: "a.rtmp.example", IsNotFound: true}, true, "destination_unreachable"},
		{"bad certificate", fmt.Errorf("tls: %w", &tls.CertificateVerificationError{Err: errors.New("x509: unknown authority")}), true, "destination_unreachable"},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, false, "connection_lost"},
		{"dns timeout", &net.DNSError{Err: "timeout", Name: "a", IsTimeout: true}, false, "connection_lost"},
		{"setup timeout", fmt.Errorf("connect: %w", rtmp.ErrSetupTimeout), false, "connection_lost"},
		{"stalled platform", fmt.Errorf("write: the server stopped reading for 10s"), false, "connection_lost"},
		{"no transcoder", fmt.Errorf("audio opus needs converting to AAC: %w", sfu.ErrNoTranscoder), false, "no_transcoder"},
		{"retries exhausted", fmt.Errorf("%w: x", errRetriesExhausted), false, "retries_exhausted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := refused(tc.err); got != tc.refused {
				t.Errorf("refused %v, want %v", got, tc.refused)
			}
			if got := errorCode(tc.err); got != tc.code {
				t.Errorf("code %q, want %q", got, tc.code)
			}
		})
	}
}
