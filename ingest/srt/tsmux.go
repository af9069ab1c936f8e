package srt

import (
	"encoding/binary"
	"errors"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/sluice-media/sluice/sfu"
)

// MPEG-TS constants (ISO/IEC 13818-1).
const (
	tsPacketSize = 188
	pidPAT       = 0
	pidPMT       = 0x1000
	// Stream types of the PMT (ISO/IEC 13818-1 table 2-34; 0x06: PES private data, Opus).
	streamTypeH264 = 0x1b
	streamTypeH265 = 0x24
	streamTypeAAC  = 0x0f
	streamTypeOpus = 0x06
	// PES stream ids: video, audio, private stream 1 (Opus).
	streamIDVideo   = 0xe0
	streamIDAudio   = 0xc0
	streamIDPrivate = 0xbd
	// pcrLead puts the PCR 100 ms before the decode times it paces.
	pcrLead = 9000
	// tablesEvery repeats PAT and PMT at least twice a second (90 kHz), and at every keyframe.
	tablesEvery = 45000
)

// errTSFrame is a frame the muxer cannot carry.
var errTSFrame = errors.New("mpegts: frame too large or empty")

// tsStream is one elementary stream of the program.
type tsStream struct {
	codec    string // sfu codec name, "" for none
	pid      uint16
	cc       uint8 // continuity counter
	channels int   // Opus
}

// tsMuxer writes one program of H.264/H.265 video and AAC/Opus audio as MPEG-TS (ISO/IEC
// 13818-1): PAT and PMT before every keyframe and twice a second, video access units in Annex B
// with an access unit delimiter (H.264 Annex B, H.265 §7.3.2.5), AAC in ADTS (ISO/IEC 14496-3
// §1.A.2), Opus with its control headers and registration descriptor (ETSI TS 102 366 style,
// as ffmpeg and VLC read it), the PCR on the video (else the audio). It appends to Out, in
// buffers it reuses: after warm-up it allocates nothing. Owned by one goroutine at a time.
type tsMuxer struct {
	// Out is what the muxer has written since it was last emptied by its owner.
	Out []byte

	video, audio tsStream
	version      uint8 // PMT version, bumped with every program change
	patCC, pmtCC uint8
	lastTables   int64
	tablesSent   bool
	pes          []byte // scratch: the PES packet being built
}

// setProgram changes the program to video and audio codecs ("" for none); channels is Opus's.
// The tables are sent again before the next frame.
func (m *tsMuxer) setProgram(video, audio string, channels int) {
	m.video = tsStream{codec: video, pid: pidVideo, cc: m.video.cc}
	m.audio = tsStream{codec: audio, pid: pidAudio, cc: m.audio.cc, channels: channels}
	m.version = (m.version + 1) & 0x1f
	m.tablesSent = false
}

func (m *tsMuxer) pcrPID() uint16 {
	if m.video.codec != "" {
		return pidVideo
	}
	return pidAudio
}

// writeVideo writes one access unit (NAL units without start codes) with its times (90 kHz).
func (m *tsMuxer) writeVideo(pts, dts int64, key bool, nalus [][]byte) error {
	if m.video.codec == "" {
		return errTSFrame
	}
	h265 := m.video.codec == sfu.CodecH265
	if key || !m.tablesSent || dts-m.lastTables >= tablesEvery {
		m.writeTables(dts)
	}
	m.pes = pesHeader(m.pes[:0], streamIDVideo, pts, dts, 0)
	if h265 {
		m.pes = append(m.pes, 0, 0, 0, 1, 35<<1, 1, 0x50) // AUD_NUT, pic_type 2 (any)
	} else {
		m.pes = append(m.pes, 0, 0, 0, 1, 9, 0xf0) // AUD, primary_pic_type 7 (any)
	}
	n := 0
	for _, nalu := range nalus {
		if len(nalu) == 0 || (!h265 && nalu[0]&0x1f == 9) || (h265 && (nalu[0]>>1)&0x3f == 35) {
			continue // empty, or an access unit delimiter of its own
		}
		m.pes = append(m.pes, 0, 0, 0, 1)
		m.pes = append(m.pes, nalu...)
		n++
	}
	if n == 0 {
		return errTSFrame
	}
	m.packetize(&m.video, m.pes, key, dts)
	return nil
}

// writeAudio writes one AAC access unit (of the config asc) or Opus packet at pts (90 kHz).
func (m *tsMuxer) writeAudio(pts int64, frame []byte, asc *mpeg4audio.AudioSpecificConfig) error {
	if len(frame) == 0 || len(frame) > 8000 || m.audio.codec == "" || (m.audio.codec == sfu.CodecAAC && asc == nil) {
		return errTSFrame
	}
	if !m.tablesSent || pts-m.lastTables >= tablesEvery {
		m.writeTables(pts)
	}
	if m.audio.codec == sfu.CodecAAC {
		m.pes = pesHeader(m.pes[:0], streamIDAudio, pts, pts, 7+len(frame))
		m.pes = appendADTS(m.pes, asc, len(frame))
	} else {
		ctl := 2 + len(frame)/255 + 1
		m.pes = pesHeader(m.pes[:0], streamIDPrivate, pts, pts, ctl+len(frame))
		m.pes = append(m.pes, 0x7f, 0xe0) // control header prefix, no trim, no extension
		for n := len(frame); ; n -= 255 {
			if n < 255 {
				m.pes = append(m.pes, byte(n))
				break
			}
			m.pes = append(m.pes, 0xff)
		}
	}
	m.pes = append(m.pes, frame...)
	m.packetize(&m.audio, m.pes, true, pts)
	return nil
}

// pesHeader appends a PES header (ISO/IEC 13818-1 §2.4.3.6) with PTS, and DTS when it differs;
// size is the payload length for a bounded packet (audio), 0 for an unbounded one (video).
func pesHeader(b []byte, streamID byte, pts, dts int64, size int) []byte {
	hdr := 5
	if dts != pts {
		hdr = 10
	}
	length := 0
	if size > 0 && 3+hdr+size <= 0xffff {
		length = 3 + hdr + size
	}
	b = append(b, 0, 0, 1, streamID, byte(length>>8), byte(length), 0x84) // '10', data_alignment
	if dts == pts {
		b = append(b, 0x80, 5)
		return appendTimestamp(b, 0x2, pts)
	}
	b = append(b, 0xc0, 10)
	b = appendTimestamp(b, 0x3, pts)
	return appendTimestamp(b, 0x1, dts)
}

// appendTimestamp appends a 33-bit PTS or DTS with its 4-bit prefix and marker bits.
func appendTimestamp(b []byte, prefix byte, t int64) []byte {
	t &= 1<<33 - 1
	return append(b,
		prefix<<4|byte(t>>29)&0x0e|1,
		byte(t>>22), byte(t>>14)|1,
		byte(t>>7), byte(t<<1)|1)
}

// appendADTS appends the 7-byte ADTS header of one AAC access unit of n bytes.
func appendADTS(b []byte, asc *mpeg4audio.AudioSpecificConfig, n int) []byte {
	profile := byte(asc.Type-1) & 0x3
	sr := byte(15)
	for i, r := range [...]int{96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350} {
		if r == asc.SampleRate {
			sr = byte(i)
		}
	}
	ch := byte(asc.ChannelCount) & 0x7
	size := 7 + n
	return append(b, 0xff, 0xf1,
		profile<<6|sr<<2|ch>>2,
		ch<<6|byte(size>>11)&0x3,
		byte(size>>3),
		byte(size<<5)|0x1f,
		0xfc)
}

// writeTables writes the PAT and the PMT.
func (m *tsMuxer) writeTables(t int64) {
	m.tablesSent, m.lastTables = true, t
	var sec [tsPacketSize]byte
	// PAT: one program, number 1, its PMT on pidPMT.
	s := append(sec[:0], 0x00, 0xb0, 0, 0x00, 0x01, 0xc1, 0, 0, 0x00, 0x01, 0xe0|pidPMT>>8, pidPMT&0xff)
	m.writeSection(pidPAT, &m.patCC, s)
	// PMT.
	pcr := m.pcrPID()
	s = append(sec[:0], 0x02, 0xb0, 0, 0x00, 0x01, 0xc1|m.version<<1, 0, 0, 0xe0|byte(pcr>>8), byte(pcr), 0xf0, 0)
	if st := m.video.codec; st != "" {
		typ := byte(streamTypeH264)
		if st == sfu.CodecH265 {
			typ = streamTypeH265
		}
		s = append(s, typ, 0xe0|byte(pidVideo>>8), byte(pidVideo&0xff), 0xf0, 0)
	}
	switch m.audio.codec {
	case sfu.CodecAAC:
		s = append(s, streamTypeAAC, 0xe0|byte(pidAudio>>8), byte(pidAudio&0xff), 0xf0, 0)
	case sfu.CodecOpus:
		// registration descriptor "Opus", and the DVB extension descriptor of Opus with the
		// channel configuration (1 or 2 channels, mapping family 0).
		s = append(s, streamTypeOpus, 0xe0|byte(pidAudio>>8), byte(pidAudio&0xff), 0xf0, 10,
			0x05, 4, 'O', 'p', 'u', 's', 0x7f, 2, 0x80, byte(min(max(m.audio.channels, 1), 2)))
	}
	m.writeSection(pidPMT, &m.pmtCC, s)
}

// writeSection completes a PSI section (its length and CRC) and writes it in one packet.
func (m *tsMuxer) writeSection(pid uint16, cc *uint8, s []byte) {
	length := len(s) - 3 + 4 // after section_length, with the CRC
	s[1] = s[1]&0xf0 | byte(length>>8)&0x0f
	s[2] = byte(length)
	s = binary.BigEndian.AppendUint32(s, crc32MPEG(s))
	start := len(m.Out)
	m.Out = append(m.Out, 0x47, 0x40|byte(pid>>8), byte(pid), 0x10|*cc&0x0f, 0) // PUSI, pointer_field 0
	*cc++
	m.Out = append(m.Out, s...)
	for len(m.Out) < start+tsPacketSize {
		m.Out = append(m.Out, 0xff)
	}
}

// packetize splits a PES packet into TS packets of st's PID. The first carries the random
// access flag when key, and the PCR (t - pcrLead) on the PCR PID; the last is padded with an
// adaptation field.
func (m *tsMuxer) packetize(st *tsStream, pes []byte, key bool, t int64) {
	first := true
	for len(pes) > 0 {
		var af [8]byte // adaptation field flags and PCR
		afLen := 0     // adaptation field bytes after its length byte
		if first {
			if key {
				af[0] |= 0x40
				afLen = 1
			}
			if st.pid == m.pcrPID() {
				af[0] |= 0x10
				pcr := max(t-pcrLead, 0) & (1<<33 - 1)
				binary.BigEndian.PutUint32(af[1:], uint32(pcr>>1))
				af[5] = byte(pcr<<7) | 0x7e
				af[6] = 0
				afLen = 7
			}
		}
		room := tsPacketSize - 4
		if afLen > 0 {
			room -= 1 + afLen
		}
		stuff := 0
		if len(pes) < room {
			stuff = room - len(pes)
			if afLen == 0 {
				stuff-- // the adaptation field's length byte
				if stuff > 0 {
					afLen = 1 // its flags byte, then stuffing
					stuff--
				}
			}
		}
		n := min(len(pes), room)
		hasAF := afLen > 0 || stuff > 0 || (len(pes) < room && afLen == 0)
		b1 := byte(st.pid>>8) & 0x1f
		if first {
			b1 |= 0x40
		}
		ctl := byte(0x10)
		if hasAF {
			ctl = 0x30
		}
		m.Out = append(m.Out, 0x47, b1, byte(st.pid), ctl|st.cc&0x0f)
		st.cc++
		if hasAF {
			m.Out = append(m.Out, byte(afLen+stuff))
			if afLen > 0 {
				m.Out = append(m.Out, af[:afLen]...)
			}
			for range stuff {
				m.Out = append(m.Out, 0xff)
			}
		}
		m.Out = append(m.Out, pes[:n]...)
		pes = pes[n:]
		first = false
	}
}

// crc32MPEG is the CRC of PSI sections (ISO/IEC 13818-1 Annex A: polynomial 0x04C11DB7, not
// reflected, initial value all ones, no final inversion).
func crc32MPEG(b []byte) uint32 {
	crc := uint32(0xffffffff)
	for _, v := range b {
		crc ^= uint32(v) << 24
		for range 8 {
			if crc&0x80000000 != 0 {
				crc = crc<<1 ^ 0x04c11db7
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
