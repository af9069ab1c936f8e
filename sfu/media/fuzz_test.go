package media

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/pion/rtp"

	"github.com/sluice-media/sluice/sfu"
)

// packetsOf splits fuzz input into RTP payloads: each packet is a 1-byte flags (bit 0 marker,
// bit 1 loss, bit 2 new timestamp, bit 3 a carried decode time) and a 1-byte length, then the
// payload.
func packetsOf(data []byte, fn func(payload []byte, marker, lost, newTS bool)) {
	packetsDTS(data, func(payload []byte, marker, lost, newTS, _ bool) { fn(payload, marker, lost, newTS) })
}

func packetsDTS(data []byte, fn func(payload []byte, marker, lost, newTS, dts bool)) {
	for len(data) >= 2 {
		flags, n := data[0], int(data[1])
		data = data[2:]
		if n > len(data) {
			n = len(data)
		}
		fn(data[:n], flags&1 != 0, flags&2 != 0, flags&4 != 0, flags&8 != 0)
		data = data[n:]
	}
}

// checkAVCC asserts an access unit is well-formed length-prefixed NAL units matching its views.
func checkAVCC(t *testing.T, avcc []byte, nalus [][]byte) {
	b := avcc
	i := 0
	for len(b) > 0 {
		if len(b) < 4 {
			t.Fatalf("truncated length prefix")
		}
		n := int(binary.BigEndian.Uint32(b))
		if n == 0 || n > len(b)-4 || i >= len(nalus) || !bytes.Equal(b[4:4+n], nalus[i]) {
			t.Fatalf("access unit does not match its NAL units")
		}
		b = b[4+n:]
		i++
	}
	if i != len(nalus) || len(avcc) > maxAccessUnit+4*maxNALUs || len(nalus) > maxNALUs {
		t.Fatalf("%d NAL units in AVCC, %d views", i, len(nalus))
	}
}

func FuzzNALUDepacketizer(f *testing.F) {
	f.Add([]byte{1, 5, 0x65, 1, 2, 3, 4})                                           // single IDR with marker
	f.Add([]byte{0, 12, 0x78, 0, 4, 0x67, 0x42, 0, 0x1f, 0, 3, 0x68, 0xce, 0x3c})   // STAP-A
	f.Add([]byte{0, 4, 0x7c, 0x85, 1, 2, 0, 3, 0x7c, 0x05, 3, 1, 3, 0x7c, 0x45, 4}) // FU-A start, middle, end
	f.Add([]byte{1, 6, 0x26, 0x01, 0xaf, 1, 2, 3})                                  // H.265 IDR
	f.Add([]byte{0, 5, 0x62, 0x01, 0x93, 1, 2, 1, 5, 0x62, 0x01, 0x53, 3, 4})       // H.265 FU
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, h265 := range []bool{false, true} {
			d := newNALUDepacketizer(h265)
			var ts uint32
			packetsOf(data, func(p []byte, marker, lost, newTS bool) {
				if newTS {
					ts += 3000
				}
				d.push(p, ts, marker, lost, func(au *accessUnit) {
					if !au.broken {
						checkAVCC(t, au.avcc, au.nalus)
					}
				})
			})
		}
	})
}

// FuzzReaders drives every reader (ours and gortsplib's decoders) with arbitrary packets:
// nothing panics, video decode times increase and never pass presentation times by more than
// the reorder bound, H.264/H.265 frames are well-formed AVCC, audio frames are not empty.
func FuzzReaders(f *testing.F) {
	f.Add([]byte{1, 5, 0x65, 1, 2, 3, 4})
	f.Add([]byte{1, 12, 0x78, 0, 4, 0x67, 0x42, 0, 0x1f, 0, 3, 0x68, 0xce, 0x3c})
	f.Add([]byte{1, 8, 0x10, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0})
	f.Add([]byte{1, 8, 0, 16, 0x00, 0x20, 1, 2, 3, 4})                       // AAC, one AU
	f.Add([]byte{0, 6, 0, 16, 0x00, 0x30, 1, 2, 5, 5, 0, 16, 0x00, 0x30, 3}) // AAC fragments
	codecs := []sfu.Codec{
		{Name: sfu.CodecH264, ClockRate: 90000}, {Name: sfu.CodecH265, ClockRate: 90000},
		{Name: sfu.CodecVP8, ClockRate: 90000}, {Name: sfu.CodecVP9, ClockRate: 90000}, {Name: sfu.CodecAV1, ClockRate: 90000},
		{Name: sfu.CodecOpus, ClockRate: 48000}, {Name: sfu.CodecPCMU, ClockRate: 8000},
		AACCodec([]byte{0x11, 0x90}, 48000, 2, 97),
		{Name: sfu.CodecAAC, ClockRate: 16000, Fmtp: "mode=AAC-lbr;sizelength=6;indexlength=2;indexdeltalength=2;config=1408"},
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, c := range codecs {
			r, err := NewReader(c)
			if err != nil {
				t.Fatal(err)
			}
			h26x := c.Name == sfu.CodecH264 || c.Name == sfu.CodecH265
			var seq uint16
			var ts uint32
			var last int64 = -1 << 62
			check := func(fr *Frame) {
				if fr.DTS > fr.PTS && !h26x {
					t.Fatalf("%s: dts after pts", c.Name)
				}
				if h26x {
					if fr.DTS <= last {
						t.Fatalf("%s: decode times not increasing: %d after %d", c.Name, fr.DTS, last)
					}
					checkAVCC(t, fr.Data, fr.NALUs)
				}
				if c.Kind() == sfu.KindAudio && (len(fr.Data) == 0 || len(fr.Data) > maxAccessUnit) {
					t.Fatalf("%s: audio frame of %d bytes", c.Name, len(fr.Data))
				}
				last = fr.DTS
			}
			packetsDTS(data, func(p []byte, marker, lost, newTS, dts bool) {
				if newTS {
					ts += 3000
				}
				seq++
				pk := &sfu.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: ts, Marker: marker}, Payload: p,
					HasDTS: dts, DTSOffset: int32(len(p)) * 1000}
				r.Push(pk, int64(ts), lost, check)
				r.Params()
			})
			r.Flush(check)
		}
	})
}

// FuzzParams: codec parameters from any fmtp never panic and stay within their bounds.
func FuzzParams(f *testing.F) {
	f.Add("mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=1190")
	f.Add("packetization-mode=1;sprop-parameter-sets=Z0LAH9kAUAW7ARA=,aM48gA==")
	f.Add("sprop-vps=QAEMAf//;sprop-sps=QgEBAQ==;sprop-pps=RAHB")
	f.Fuzz(func(t *testing.T, fmtp string) {
		if a, err := ParseAAC(sfu.Codec{Name: sfu.CodecAAC, Fmtp: fmtp}); err == nil {
			if a.SizeLength < 1 || a.SizeLength > 32 || a.IndexLength > 32 || a.IndexDeltaLength > 32 || len(a.Raw) == 0 {
				t.Fatalf("out of bounds: %+v", a)
			}
		}
		sps, pps := H264Sprop(fmtp)
		if (sps != nil && sps[0]&0x1f != naluSPS) || (pps != nil && pps[0]&0x1f != naluPPS) {
			t.Fatal("wrong parameter set type")
		}
		H265Sprop(fmtp)
		_, _ = NewReader(sfu.Codec{Name: sfu.CodecH264, Fmtp: fmtp})
		_, _ = NewReader(sfu.Codec{Name: sfu.CodecH265, Fmtp: fmtp})
	})
}
