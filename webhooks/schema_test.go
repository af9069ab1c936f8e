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
	"github.com/sluice-media/sluice/sfu/sfutest"
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
		Tracks: []string{track.SID}, BitrateKbps: f(2540.5), FPS: f(29.9), PacketsLost: i64(3), JitterMs: f(1.5), RTTMs: f(12), KeyframeIntervalMs: i64(2000),
		Retransmits: i64(5), Bytes: i64(95250000), DroppedFrames: i64(2)}
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
	s2 := withoutFigures(*stream)
	s2.State = "ended"
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
	e.Version, e.Node = "v1.0.0", sfu.NodeRef{ID: "edge-1"}
	out["server.started"] = e
	addEveryType(out, base, room, part, track, stream, later)
	return out
}

// addEveryType adds one event of each catalogue type that the shapes above do not show.
func addEveryType(out map[string]*sfu.Event, base func(string, uint64) *sfu.Event, room *sfu.RoomInfo, part *sfu.ParticipantInfo,
	track *sfu.TrackInfo, stream *sfu.StreamInfo, later time.Time) {
	seq := uint64(2000)
	add := func(typ string, fill func(e *sfu.Event)) {
		seq++
		e := base(typ, seq)
		fill(e)
		out[typ] = e
	}
	at := room.CreatedAt
	muted := *track
	muted.Muted = true
	live := withoutFigures(*stream)
	ended := live
	ended.State = "ended"
	viewer := &sfu.ParticipantInfo{SID: "PA_v13werQ01", Identity: "viewer-1", Kind: sfu.ParticipantWebRTC, JoinedAt: at, RemoteAddr: "198.51.100.4:61000"}
	play := live
	play.SID, play.Direction, play.Protocol, play.RemoteAddr = "ST_p1Ay0000", sfu.DirectionPlay, sfu.ProtocolWHEP, viewer.RemoteAddr
	for _, typ := range []string{sfu.EventRoomStarted, sfu.EventRoomUpdated, sfu.EventRoomFinished} {
		add(typ, func(e *sfu.Event) {
			e.Room = room
			if typ == sfu.EventRoomFinished {
				r := *room
				r.Participants = 0
				e.Room, e.Reason = &r, "empty_timeout"
			}
		})
	}
	for _, typ := range []string{sfu.EventParticipantJoined, sfu.EventParticipantUpdated} {
		add(typ, func(e *sfu.Event) { e.Room, e.Participant = room, part })
	}
	for _, typ := range []string{sfu.EventTrackUpdated, sfu.EventTrackMuted, sfu.EventTrackUnmuted, sfu.EventTrackInterrupted,
		sfu.EventTrackRecovered, sfu.EventTrackUnpublished} {
		add(typ, func(e *sfu.Event) {
			e.Room, e.Participant, e.Track = room, part, track
			switch typ {
			case sfu.EventTrackMuted:
				e.Track = &muted
			case sfu.EventTrackUnpublished:
				e.Reason = sfu.ReasonClientDisconnected
			}
		})
	}
	for _, typ := range []string{sfu.EventTrackSubscribed, sfu.EventTrackUnsubscribed, sfu.EventTrackSubscriptionFailed} {
		add(typ, func(e *sfu.Event) {
			e.Room, e.Participant, e.Track = room, viewer, track
			if typ == sfu.EventTrackSubscriptionFailed {
				e.Error = &sfu.ErrorInfo{Code: "codec_not_supported", Message: "the subscriber cannot receive H265"}
			}
		})
	}
	add(sfu.EventStreamPublishing, func(e *sfu.Event) { e.Room, e.Participant, e.Stream = room, part, &live })
	add(sfu.EventStreamUpdated, func(e *sfu.Event) { e.Room, e.Participant, e.Stream = room, part, &live })
	add(sfu.EventStreamUnpublished, func(e *sfu.Event) {
		e.Room, e.Participant, e.Stream, e.Reason = room, part, &ended, sfu.ReasonClientDisconnected
	})
	add(sfu.EventStreamPlaying, func(e *sfu.Event) { e.Room, e.Participant, e.Stream = room, viewer, &play })
	add(sfu.EventStreamStopped, func(e *sfu.Event) {
		p := play
		p.State = "ended"
		e.Room, e.Participant, e.Stream, e.Reason = room, viewer, &p, sfu.ReasonClientDisconnected
	})
	ingest := &sfu.IngestInfo{ID: "IN_Cam1", Type: "rtsp_pull", Room: "cam-1", ParticipantIdentity: "camera", URL: "rtsp://cam.local/stream", State: "idle"}
	add(sfu.EventIngestCreated, func(e *sfu.Event) { e.Ingest = ingest })
	add(sfu.EventIngestDeleted, func(e *sfu.Event) { e.Ingest = ingest })
	file := sfu.RecordingFile{Path: "lobby/RC_Xy12/obs-20261122T080000Z.mp4", SizeBytes: 9524533, DurationMs: 30000, StartedAt: at, Location: "local"}
	rec := func(status string, files ...sfu.RecordingFile) *sfu.RecordingInfo {
		r := &sfu.RecordingInfo{ID: "RC_Xy12", Room: "lobby", Participant: "obs", Tracks: []string{track.SID}, Format: "mp4", Status: status,
			Files: append([]sfu.RecordingFile{}, files...)}
		if status != "starting" {
			r.StartedAt = &at
		}
		for _, f := range files {
			r.DurationMs += f.DurationMs
			r.SizeBytes += f.SizeBytes
		}
		return r
	}
	add(sfu.EventRecordingStarted, func(e *sfu.Event) {
		f := file
		f.SizeBytes, f.DurationMs = 1024, 0
		e.Room, e.Recording, e.Reason = room, rec("active", f), "requested"
	})
	add(sfu.EventRecordingUpdated, func(e *sfu.Event) {
		e.Room, e.Recording, e.Reason = room, rec("paused", file), "paused"
		e.Recording.PausedMs = 12
	})
	add(sfu.EventRecordingEnded, func(e *sfu.Event) {
		e.Room, e.Recording, e.Reason = room, rec("complete", file), sfu.ReasonStopped
		e.Recording.EndedAt, e.Recording.PausedMs = &later, 60000
	})
	add(sfu.EventRecordingDeleted, func(e *sfu.Event) {
		e.Room, e.Recording, e.Reason = room, rec("complete", file), "retention_age"
		e.Recording.EndedAt = &later
	})
	bc := func(status string, dests ...sfu.BroadcastDestination) *sfu.BroadcastInfo {
		return &sfu.BroadcastInfo{ID: "BC_Qw34", Room: "lobby", Participant: "obs", URL: dests[0].URL, Status: status, StartedAt: &at,
			BytesSent: 1 << 20, Destinations: dests}
	}
	yt := sfu.BroadcastDestination{ID: "DST_yt", URL: "rtmps://a.rtmp.youtube.com/live2/***", Status: "active", BytesSent: 1 << 20}
	tw := sfu.BroadcastDestination{ID: "DST_tw", URL: "rtmp://live.twitch.tv/app/***", Status: "failed", Reconnects: 3,
		Error: &sfu.ErrorInfo{Code: "retries_exhausted", Message: "no connection for 1m0s: connection refused"}}
	add(sfu.EventBroadcastStarted, func(e *sfu.Event) { e.Room, e.Broadcast = room, bc("active", yt) })
	add(sfu.EventBroadcastUpdated, func(e *sfu.Event) {
		e.Room, e.Broadcast, e.Error = room, bc("active", tw, yt), tw.Error
		e.Broadcast.Reconnects = 3
	})
	add(sfu.EventBroadcastEnded, func(e *sfu.Event) {
		e.Room, e.Broadcast, e.Reason = room, bc("complete", yt), sfu.ReasonStopped
		e.Broadcast.EndedAt = &later
	})
	add(sfu.EventBroadcastFailed, func(e *sfu.Event) {
		e.Room, e.Broadcast, e.Error = room, bc("failed", tw), tw.Error
		e.Broadcast.EndedAt, e.Broadcast.Error = &later, tw.Error
	})
	add(sfu.EventServerStopping, func(e *sfu.Event) { e.Version, e.Node = "v1.0.0", sfu.NodeRef{ID: "edge-1"} })
	node := sfu.NodeRef{ID: "edge-2", Address: "http://10.0.0.2:8800", Version: "v1.0.0"}
	add(sfu.EventNodeJoined, func(e *sfu.Event) { e.Node = node })
	add(sfu.EventNodeLeft, func(e *sfu.Event) { e.Node, e.Reason = node, sfu.ReasonNodeLost })
}

// Every type of the catalogue has a golden wire form. node.joined and node.left carry the node
// object (id, address, version); server.* events keep their node as a bare id (sfu.NodeRef).
func TestGoldenCoversCatalogue(t *testing.T) {
	golden := goldenEvents()
	for _, typ := range sfutest.Catalogue {
		if golden[typ] == nil || golden[typ].Type != typ {
			t.Errorf("no golden event of type %s", typ)
		}
	}
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

// withoutFigures returns s without the figures only stream.stats carries.
func withoutFigures(s sfu.StreamInfo) sfu.StreamInfo {
	s.BitrateKbps, s.FPS, s.PacketsLost, s.JitterMs, s.RTTMs, s.KeyframeIntervalMs = nil, nil, nil, nil, nil, nil
	s.Retransmits, s.Bytes, s.DroppedFrames = nil, nil, nil
	return s
}
