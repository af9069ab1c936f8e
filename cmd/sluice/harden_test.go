package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// flooder is the address hostile clients come from in these tests: another loopback address,
// so that the per-address caps leave 127.0.0.1 (the test's own client) alone.
const flooder = "127.0.0.2"

func dialFrom(t *testing.T, src, url string) (net.Conn, error) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	return d.Dial("tcp", strings.TrimPrefix(url, "http://"))
}

// openFDs counts the daemon's open file descriptors.
func openFDs(t *testing.T, d *daemonProc) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// One client that opens connections without end (each one request, then idle; or a body sent
// one byte at a time) cannot take the file descriptors that the event store, media and other
// clients need: connections are capped globally and per address, idle ones and slow bodies
// time out. The daemon runs with a low RLIMIT_NOFILE (soft = hard, so it cannot raise it).
func TestHTTPFloodCannotExhaustDescriptors(t *testing.T) {
	prlimit := sfutest.RequireTool(t, "prlimit")
	t.Setenv("SLUICE_HTTP_IDLE_TIMEOUT", "2s")
	t.Setenv("SLUICE_HTTP_BODY_TIMEOUT", "2s")
	t.Setenv("SLUICE_HTTP_MAX_CONNS_PER_IP", "32")
	d := startDaemonUnder(t, "", prlimit, "--nofile=400:400", "--")

	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	// a body that never ends
	var trickle []net.Conn
	for range 5 {
		c, err := dialFrom(t, flooder, d.URL)
		if err != nil {
			break
		}
		trickle = append(trickle, c)
		conns = append(conns, c)
		_, _ = fmt.Fprintf(c, "POST /v1/rooms HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
	}
	// idle after one request (a 401 or 200 alike)
	for range 600 {
		c, err := dialFrom(t, flooder, d.URL)
		if err != nil {
			break
		}
		conns = append(conns, c)
		_, _ = fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	time.Sleep(500 * time.Millisecond)
	if n := openFDs(t, d); n > 300 {
		t.Errorf("the daemon holds %d descriptors of 400 during the flood", n)
	}

	// the test's own client is served, and the event store still stores
	if code, err := apiDo(d.URL, "POST", "/v1/rooms", `{"name":"still-here"}`); err != nil || code != http.StatusCreated {
		t.Fatalf("create room during the flood: %d %v", code, err)
	}
	sfutest.WaitFor(t, "room.started stored during the flood", 10*time.Second, func() bool {
		for _, ev := range logEvents(t, d.URL) {
			if ev.Type == "room.started" && ev.RoomName() == "still-here" {
				return true
			}
		}
		return false
	})
	if strings.Contains(d.logs.String(), "EVENT LOST") || strings.Contains(d.logs.String(), "too many open files") {
		t.Fatalf("the flood reached the descriptors:\n%s", tail(d.logs.String(), 30))
	}

	// idle connections and the never-ending bodies are closed by the daemon
	for i, c := range append(trickle, conns[:20]...) {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		b, err := io.ReadAll(bufio.NewReader(c))
		if i < len(trickle) && !strings.HasPrefix(string(b), "HTTP/1.1 408 ") {
			t.Errorf("a body sent too slowly got %q, %v; want 408", b, err)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("connection %d was not closed by the daemon: %v", i, err)
		}
	}
}

// createPull adds an rtsp_pull ingest for url and returns its id.
func createPull(t *testing.T, d *daemonProc, room, url string) string {
	t.Helper()
	out, err := d.cli("ingest", "create", "rtsp", "--room", room, "--url", url, "-o", "json")
	if err != nil {
		t.Fatalf("ingest create %s: %v\n%s", url, err, out)
	}
	var v ingest.View
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return v.ID
}

// pullError waits for the ingest's first failure and returns its error text.
func pullError(t *testing.T, d *daemonProc, id string) string {
	t.Helper()
	var msg string
	sfutest.WaitFor(t, "ingest "+id+" to fail", 20*time.Second, func() bool {
		out, err := d.cli("ingest", "show", id, "-o", "json")
		if err != nil {
			return false
		}
		var v ingest.View
		if json.Unmarshal([]byte(out), &v) != nil {
			return false
		}
		msg = v.Error
		return msg != ""
	})
	return msg
}

// Camera pulls (and broadcasts, through the same dialer) never reach link-local or metadata
// addresses nor the daemon's own ports, and their error text does not tell a closed port from
// an open one that speaks something else.
func TestPullAddressPolicy(t *testing.T) {
	d := startDaemon(t, "")
	port := strings.TrimPrefix(d.URL, "http://127.0.0.1:")
	for _, tc := range []struct{ url, want string }{
		{"rtsp://169.254.169.254/latest", "not allowed"},
		{"rtsp://127.0.0.1:" + port + "/v1/status", "not allowed"},
	} {
		if msg := pullError(t, d, createPull(t, d, "p", tc.url)); !strings.Contains(msg, tc.want) {
			t.Errorf("%s: error %q, want %q", tc.url, msg, tc.want)
		}
	}

	// a port where nothing listens, and one where a server answers in another protocol
	closed := sfutest.FreeTCPPort(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("SSH-2.0-OpenSSH_9.6\r\n"))
			_ = c.Close()
		}
	}()
	a := pullError(t, d, createPull(t, d, "q", fmt.Sprintf("rtsp://127.0.0.1:%d/x", closed)))
	b := pullError(t, d, createPull(t, d, "r", fmt.Sprintf("rtsp://%s/x", ln.Addr())))
	strip := func(s string) string {
		return strings.NewReplacer(strconv.Itoa(closed), "PORT", strconv.Itoa(ln.Addr().(*net.TCPAddr).Port), "PORT").Replace(s)
	}
	if strip(a) != strip(b) {
		t.Errorf("the error tells a closed port (%q) from an open one (%q)", a, b)
	}
}
