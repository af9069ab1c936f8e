package webhooks

import (
	"context"
	"testing"
	"time"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// emitOpenObjects emits the beginning of one object of each kind (and one that also ends).
func emitOpenObjects(l *Log) {
	room := &sfu.RoomInfo{Name: "lobby", SID: "RM_1", Participants: 1}
	part := &sfu.ParticipantInfo{SID: "PA_1", Identity: "cam", Kind: sfu.ParticipantRTSPPull}
	track := &sfu.TrackInfo{SID: "TR_1", ParticipantSID: "PA_1", Kind: "video", Codec: "H264"}
	l.Emit(&sfu.Event{Type: sfu.EventRoomStarted, Room: room})
	l.Emit(&sfu.Event{Type: sfu.EventParticipantJoined, Room: room, Participant: part})
	l.Emit(&sfu.Event{Type: sfu.EventTrackPublished, Room: room, Participant: part, Track: track})
	l.Emit(&sfu.Event{Type: sfu.EventStreamPublishing, Room: room, Participant: part, Stream: &sfu.StreamInfo{SID: "ST_1", Direction: sfu.DirectionPublish, Protocol: "rtsp", State: "live"}})
	l.Emit(&sfu.Event{Type: sfu.EventStreamPlaying, Room: room, Participant: part, Stream: &sfu.StreamInfo{SID: "ST_2", Direction: sfu.DirectionPlay, Protocol: "whep", State: "live"}})
	l.Emit(&sfu.Event{Type: sfu.EventStreamStopped, Room: room, Participant: part, Stream: &sfu.StreamInfo{SID: "ST_2", Direction: sfu.DirectionPlay}, Reason: sfu.ReasonClientDisconnected})
	rec := &sfu.RecordingInfo{ID: "RC_1", Room: "lobby", Status: "active", Format: "mp4", Files: []sfu.RecordingFile{{Path: "lobby/RC_1/a.mp4"}}}
	l.Emit(&sfu.Event{Type: sfu.EventRecordingStarted, Room: room, Recording: rec})
	rec2 := *rec
	rec2.Files = append(rec2.Files, sfu.RecordingFile{Path: "lobby/RC_1/b.mp4"})
	l.Emit(&sfu.Event{Type: sfu.EventRecordingUpdated, Room: room, Recording: &rec2})
	l.Emit(&sfu.Event{Type: sfu.EventBroadcastStarted, Room: room, Broadcast: &sfu.BroadcastInfo{ID: "BC_1", Room: "lobby", URL: "rtmp://x/app/<redacted>", Status: "live"}})
}

// terminals returns the terminal events stored after seq, by object id.
func terminals(t *testing.T, l *Log, after uint64) map[string]*sfu.Event {
	t.Helper()
	out := map[string]*sfu.Event{}
	for _, r := range readAll(t, l, Query{After: after}) {
		ev, err := r.Event()
		if err != nil {
			t.Fatal(err)
		}
		lc, ok := lifecycles[ev.Type]
		if !ok || lc.op != 'e' {
			continue
		}
		id := objectID(lc.kind, ev)
		if out[id] != nil {
			t.Fatalf("two terminal events for %s: %s and %s", id, out[id].Type, ev.Type)
		}
		out[id] = ev
	}
	return out
}

func TestReconcileAfterCrash(t *testing.T) {
	dir := t.TempDir()
	l := openTestLog(t, dir, nil)
	emitOpenObjects(l)
	last := l.index.seq
	_ = l.Close() // a crash: no final snapshot, no server.stopping

	l = openTestLog(t, dir, nil)
	if n := l.Reconcile(context.Background()); n != 4 { // stream ST_1, track, participant, room now
		t.Fatalf("reconciled %d objects now, want 4", n)
	}
	var got map[string]*sfu.Event
	sfutest.WaitFor(t, "recording and broadcast ended after the grace", wait, func() bool {
		got = terminals(t, l, last)
		return len(got) == 6
	})
	want := map[string]string{"ST_1": sfu.EventStreamUnpublished, "TR_1": sfu.EventTrackUnpublished, "PA_1": sfu.EventParticipantLeft,
		"RM_1": sfu.EventRoomFinished, "RC_1": sfu.EventRecordingFailed, "BC_1": sfu.EventBroadcastFailed}
	for id, typ := range want {
		ev := got[id]
		if ev == nil || ev.Type != typ || ev.Reason != sfu.ReasonError {
			t.Fatalf("%s: %+v, want %s reason error", id, ev, typ)
		}
	}
	if r := got["RC_1"].Recording; r.Status != "failed" || len(r.Files) != 2 || r.Error == nil || got["RC_1"].Error == nil {
		t.Fatalf("recording.failed carries %+v", r)
	}
	if got["ST_2"] != nil {
		t.Fatal("the stream that had ended got another terminal event")
	}
	// a second start finds nothing open
	_ = l.Close()
	l = openTestLog(t, dir, nil)
	if n := l.Reconcile(context.Background()); n != 0 {
		t.Fatalf("second start reconciled %d", n)
	}
}

func TestReconcileAfterCleanStopAndRecovery(t *testing.T) {
	dir := t.TempDir()
	l := openTestLog(t, dir, func(o *LogOptions) { o.EgressGrace = 2 * time.Second })
	emitOpenObjects(l)
	l.Emit(&sfu.Event{Type: sfu.EventServerStopping})
	last := l.index.seq
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Run(ctx) }()
	cancel()
	<-done // the final snapshot
	_ = l.Close()

	l = openTestLog(t, dir, func(o *LogOptions) { o.EgressGrace = 2 * time.Second })
	l.Reconcile(context.Background())
	// the recorder recovers its own recording within the grace: no second terminal event
	l.Emit(&sfu.Event{Type: sfu.EventRecordingFailed, Room: &sfu.RoomInfo{Name: "lobby"}, Recording: &sfu.RecordingInfo{ID: "RC_1", Room: "lobby", Status: "failed"}, Error: &sfu.ErrorInfo{Code: "interrupted"}})
	var got map[string]*sfu.Event
	sfutest.WaitFor(t, "the broadcast ended after the grace", wait, func() bool {
		got = terminals(t, l, last)
		return got["BC_1"] != nil
	})
	if got["RM_1"].Reason != sfu.ReasonServerShutdown || got["BC_1"].Type != sfu.EventBroadcastEnded || got["BC_1"].Reason != sfu.ReasonServerShutdown {
		t.Fatalf("after a clean stop: room %+v broadcast %+v", got["RM_1"], got["BC_1"])
	}
	if got["RC_1"].Reason != "" { // the recorder's own, not the log's
		t.Fatalf("recording got %+v", got["RC_1"])
	}
}
