package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sluice-media/sluice/sfu"
)

func TestReadSSE(t *testing.T) {
	in := "retry: 1000\n: comment\nid: 7\n\nid: 8\ndata: {\"a\":1}\n\n: heartbeat\n\nid: 9\ndata: {\"b\":2}\n\n"
	type got struct {
		id   uint64
		data string
	}
	var out []got
	err := readSSE(strings.NewReader(in), func() {}, func(id uint64, data []byte) error {
		out = append(out, got{id, string(data)})
		return nil
	})
	want := []got{{7, ""}, {8, `{"a":1}`}, {9, `{"b":2}`}}
	if err != nil || len(out) != len(want) {
		t.Fatalf("%v %+v", err, out)
	}
	for i := range want {
		if out[i] != want[i] {
			t.Fatalf("event %d: %+v, want %+v", i, out[i], want[i])
		}
	}
}

func TestEventLine(t *testing.T) {
	kbps := 2540.0
	ev := &sfu.Event{Seq: 42, Type: sfu.EventStreamStats, Room: &sfu.RoomInfo{Name: "lobby"},
		Participant: &sfu.ParticipantInfo{Identity: "obs"}, Stream: &sfu.StreamInfo{Protocol: "rtmp", Direction: "publish", BitrateKbps: &kbps}}
	line := eventLine(ev)
	for _, part := range []string{"#42", "stream.stats", "lobby", "who=obs", "stream=rtmp/publish", "kbps=2540"} {
		if !strings.Contains(line, part) {
			t.Fatalf("%q lacks %q", line, part)
		}
	}
	if strings.Contains(line, "\n") {
		t.Fatal("more than one line")
	}
}

func FuzzReadSSE(f *testing.F) {
	f.Add([]byte("id: 1\ndata: {}\n\n"))
	f.Add([]byte("id: x\n\ndata: \n\n: c\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		n := 0
		_ = readSSE(bytes.NewReader(in), func() {}, func(uint64, []byte) error { n++; return nil })
		if n > bytes.Count(in, []byte("\n")) {
			t.Fatalf("%d events from %d lines", n, bytes.Count(in, []byte("\n")))
		}
	})
}
