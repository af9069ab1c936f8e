package srt

import (
	"log/slog"
	"sync/atomic"
	"testing"

	gosrt "github.com/datarhei/gosrt"

	"github.com/sluice-media/sluice/sfu"
	"github.com/sluice-media/sluice/sfu/media"
	"github.com/sluice-media/sluice/sfu/media/mediatest"
	"github.com/sluice-media/sluice/sfu/sfutest"
)

// nullConn is an SRT connection that takes every write (the rest of gosrt.Conn is not used).
type nullConn struct {
	gosrt.Conn
	bytes int
}

func (c *nullConn) Write(p []byte) (int, error) { c.bytes += len(p); return len(p), nil }

// BenchmarkPlayH264 is the play path of one reader: one second of 30 fps H.264 (193 packets)
// through the frame reader and the MPEG-TS muxer to the connection.
func BenchmarkPlayH264(b *testing.B) {
	hub, _ := sfutest.NewHub(b, nil)
	p, err := hub.Join("bench", sfu.ParticipantSpec{Identity: "cam"})
	if err != nil {
		b.Fatal(err)
	}
	sps := []byte{0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10}
	pps := []byte{0x68, 0xeb, 0xe3, 0xcb}
	track, err := p.Publish(sfu.TrackSpec{Codec: media.H264Codec(sps, pps, 96), Name: "video"})
	if err != nil {
		b.Fatal(err)
	}
	conn := &nullConn{}
	pl := newPlayer(conn, "", &atomic.Uint64{}, slog.New(slog.DiscardHandler))
	sl := pl.slots[0]
	sl.switched(track)
	pkts := mediatest.H264GOP(b, sps, pps)
	qs := make([]sfu.Packet, len(pkts))
	round := uint32(0)
	feed := func() {
		for i, pk := range pkts {
			qs[i] = *pk
			qs[i].Header.Timestamp += round * 90000
			qs[i].Header.SequenceNumber = uint16(int(round)*len(pkts) + i)
			qs[i].Arrival = int64(round)*1e9 + int64(i)*1e6
			_ = sl.WritePacket(&qs[i], false)
		}
		round++
	}
	for range 5 {
		feed()
	}
	if pl.frames.Load() == 0 || conn.bytes == 0 {
		b.Fatal("nothing muxed")
	}
	b.ResetTimer()
	b.ReportAllocs()
	for b.Loop() {
		feed()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(pkts)), "ns/packet")
	b.ReportMetric(float64(testing.AllocsPerRun(1, feed))/float64(len(pkts)), "allocs/packet")
}
