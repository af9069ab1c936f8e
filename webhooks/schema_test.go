package webhooks

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
)

var update = flag.Bool("update", false, "rewrite the golden files of the wire schema")

// goldenEvents are one event of each object shape of shared/EVENTS.md, fully populated.
func goldenEvents() map[string]*sfu.Event {
	at := time.Date(2026, 11, 22, 8, 0, 0, 123000000, time.UTC)
	later := at.Add(90 * time.Second)
	f := func(v float64) *float64 { return &v }
	i64 := func(v int64) *int64 { return &v }
	i := func(v int) *int { return &v }
	room := &sfu.RoomInfo{Name: "lobby", SID: "RM_4f9KcTq2LmNpXz01", CreatedAt: at, Participants: 2, Metadata: `{"topic":"demo"}`}
	part := &sfu.ParticipantInfo{SID: "PA_8sJd02Kx1mQwErTy", Identity: "obs", Name: "OBS studio", Kind: sfu.ParticipantRTMP, JoinedAt: at, RemoteAddr: "203.0.113.7:50412"}
	track := &sfu.TrackInfo{SID: "TR_Zq81LmN0pAsDfGh2", ParticipantSID: part.SID, Kind: "video", Codec: "H264", Source: "ingest", Width: 1280, Height: 720}
	stream := &sfu.StreamInfo{SID: "ST_a1B2c3D4e5F6g7H8", Direction: sfu.DirectionPublish, Protocol: sfu.ProtocolRTMP, State: "live", RemoteAddr: part.RemoteAddr,
		Tracks: []string{track.SID}, BitrateKbps: f(2540.5), FPS: f(29.9), PacketsLost: i64(3), JitterMs: f(1.5), RTTMs: f(12), KeyframeIntervalMs: i64(2000)}
	base := func(typ string, seq uint64) *sfu.Event {
		return &sfu.Event{ID: "evt_2Yp3golden" + typ, Type: typ, Seq: seq, Time: at}
	}
	out := map[string]*sfu.Event{}
	e := base(sfu.EventParticipantLeft, 1042)
	e.Room, e.Participant, e.Reason = room, part, sfu.ReasonClientDisconnected
	out["participant.left"] = e
	e = base(sfu.EventTrackPublished, 1043)
	e.Room, e.Participant, e.Track = room, part, track
	out["track.published"] = e
	e = base(sfu.EventStreamStats, 1044)
	e.Room, e.Participant, e.Stream = room, part, stream
	out["stream.stats"] = e
	e = base(sfu.EventStreamFailed, 1045)
	s2 := *stream
	s2.State, s2.BitrateKbps, s2.FPS, s2.PacketsLost, s2.JitterMs, s2.RTTMs, s2.KeyframeIntervalMs = "ended", nil, nil, nil, nil, nil, nil
	e.Room, e.Participant, e.Stream, e.Error = room, part, &s2, &sfu.ErrorInfo{Code: "error", Message: "connection reset"}
	out["stream.failed"] = e
	e = base(sfu.EventRecordingFailed, 1046)
	e.Room = room
	e.Recording = &sfu.RecordingInfo{ID: "RC_Xy12", Room: "lobby", Participant: "obs", Tracks: []string{track.SID}, Format: "mp4", Status: "failed",
		StartedAt: &at, EndedAt: &later, DurationMs: 90000, SizeBytes: 28573600,
		Files: []sfu.RecordingFile{{Path: "lobby/RC_Xy12/obs-20261122T080000Z.mp4", SizeBytes: 28573600, DurationMs: 90000, StartedAt: at}},
		Error: &sfu.ErrorInfo{Code: "interrupted", Message: "the daemon ended without finishing this object (crash or kill); ended at restart"}}
	e.Error, e.Reason = e.Recording.Error, sfu.ReasonError
	out["recording.failed"] = e
	e = base(sfu.EventBroadcastReconnecting, 1047)
	e.Room = room
	e.Broadcast = &sfu.BroadcastInfo{ID: "BC_Qw34", Room: "lobby", Participant: "obs", URL: "rtmps://live.example.com/app/<redacted>", Status: "reconnecting",
		StartedAt: &at, BytesSent: 1 << 20, Reconnects: 1}
	e.Error = &sfu.ErrorInfo{Code: "destination", Message: "connection refused"}
	out["broadcast.reconnecting"] = e
	e = base(sfu.EventIngestStateChanged, 1048)
	e.Ingest = &sfu.IngestInfo{ID: "IN_Cam1", Type: "rtsp_pull", Room: "cam-1", ParticipantIdentity: "camera", URL: "rtsp://cam.local/stream", State: "reconnecting", Retries: 2}
	e.PrevState, e.Reason = "connected", "timeout"
	out["ingest.state_changed"] = e
	e = base(sfu.EventParticipantQuality, 1049)
	e.Room, e.Participant, e.Uplink, e.Downlink = room, part, i(1), i(3)
	out["participant.quality"] = e
	e = base(sfu.EventSpeakersChanged, 1050)
	e.Room, e.Speakers = room, []sfu.Speaker{{Identity: "alice", SID: "PA_1", Level: 87}, {Identity: "bob", SID: "PA_2", Level: 12}}
	out["speakers.changed"] = e
	e = base(sfu.EventAuthFailed, 1051)
	e.Reason, e.RemoteAddr, e.Protocol = sfu.AuthExpiredToken, "198.51.100.9:4711", "rtmp"
	out["auth.failed"] = e
	e = base(sfu.EventServerStarted, 1)
	e.Version, e.Node = "v1.0.0", "edge-1"
	out["server.started"] = e
	return out
}

// TestWireSchemaGolden pins the JSON of the envelope and every object (shared/EVENTS.md):
// fields may be added (update the golden files with -update), never renamed or removed.
func TestWireSchemaGolden(t *testing.T) {
	for name, ev := range goldenEvents() {
		t.Run(name, func(t *testing.T) {
			got, err := json.MarshalIndent(ev, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", "golden", name+".json")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run Golden -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("wire schema changed for %s:\n--- got\n%s\n--- want\n%s", name, got, want)
			}
			// and it reads back to the same event
			var back sfu.Event
			if err := json.Unmarshal(want, &back); err != nil {
				t.Fatal(err)
			}
			again, _ := json.MarshalIndent(&back, "", "  ")
			if !bytes.Equal(append(again, '\n'), want) {
				t.Fatal("the golden event does not round-trip")
			}
		})
	}
}

// The body a webhook receives is the stored event with its seq, in the same schema.
func TestStoredBodyIsWireSchema(t *testing.T) {
	l := openTestLog(t, t.TempDir(), nil)
	for name, ev := range goldenEvents() {
		want := *ev
		cp := *ev
		cp.Seq = 0
		l.Emit(&cp)
		want.Seq = cp.Seq
		recs := readAll(t, l, Query{After: cp.Seq - 1})
		wantJSON, _ := json.Marshal(&want)
		if len(recs) == 0 || !bytes.Equal(recs[0].Body, wantJSON) {
			t.Fatalf("%s: stored body\n%s\nwant\n%s", name, recs[0].Body, wantJSON)
		}
	}
}
