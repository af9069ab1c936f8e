//go:build !linux

package rtsp

import "net"

// rawTCPReader is a plain read where the system is not Linux.
type rawTCPReader struct{ conn net.Conn }

func newRawTCPReader(conn net.Conn) *rawTCPReader { return &rawTCPReader{conn: conn} }

func (r *rawTCPReader) Read(b []byte) (int, error) { return r.conn.Read(b) }
