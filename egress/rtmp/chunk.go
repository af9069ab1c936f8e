package rtmp

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/yutopp/go-rtmp/message"
)

// The RTMP chunk stream (RTMP spec 1.0 §5.3). Both directions are ours rather than go-rtmp's
// ChunkStreamer: its writer leaves the extended timestamp out of type 3 chunks (nginx-rtmp and
// ffmpeg then misread every message split into chunks once a broadcast passes 4 h 39 min), it
// writes from a goroutine of its own that can block for ever after a failed write, and its
// reader has no bound on what a server declares and panics on a zero-length message.

// Message type ids (RTMP spec 1.0 §5.4, §7.1), as go-rtmp names them.
const (
	typeSetChunkSize  = byte(message.TypeIDSetChunkSize)
	typeAck           = byte(message.TypeIDAck)
	typeUserControl   = byte(message.TypeIDUserCtrl)
	typeWindowAckSize = byte(message.TypeIDWinAckSize)
	typeAudio         = byte(message.TypeIDAudioMessage)
	typeVideo         = byte(message.TypeIDVideoMessage)
	typeDataAMF0      = byte(message.TypeIDDataMessageAMF0)
	typeCommandAMF0   = byte(message.TypeIDCommandMessageAMF0)
)

// Chunk stream ids of what the client sends (the ones ffmpeg uses).
const (
	csControl = 2 // protocol control and user control messages
	csCommand = 3 // NetConnection commands
	csAudio   = 4
	csVideo   = 6
	csStream  = 8 // NetStream commands and data (publish, @setDataFrame)
)

// Bounds of what the server may send.
const (
	maxInMessage      = 256 << 10 // commands and control messages are small
	maxInChunkStreams = 32
	extendedTimestamp = 0xffffff
	maxChunkSize      = 0xffffff // larger values are equivalent (RTMP spec §5.4.1)
)

// errChunk marks a chunk stream the client cannot follow.
var errChunk = errors.New("rtmp chunk stream")

// appendMessage appends one message as chunks of at most chunkSize bytes of payload: a type 0
// chunk, then type 3 chunks. A timestamp of 0xffffff or more goes in the extended timestamp
// field, which every chunk of the message then carries (RTMP spec §5.3.1.3). csid must be in
// [2, 63].
func appendMessage(dst []byte, csid byte, typ byte, streamID, ts uint32, payload []byte, chunkSize int) []byte {
	ext := ts >= extendedTimestamp
	ts24 := ts
	if ext {
		ts24 = extendedTimestamp
	}
	n := len(payload)
	dst = append(dst, csid&0x3f,
		byte(ts24>>16), byte(ts24>>8), byte(ts24),
		byte(n>>16), byte(n>>8), byte(n),
		typ)
	dst = binary.LittleEndian.AppendUint32(dst, streamID)
	if ext {
		dst = binary.BigEndian.AppendUint32(dst, ts)
	}
	for first := true; first || len(payload) > 0; first = false {
		if !first {
			dst = append(dst, 0xc0|csid&0x3f)
			if ext {
				dst = binary.BigEndian.AppendUint32(dst, ts)
			}
		}
		k := min(len(payload), chunkSize)
		dst = append(dst, payload[:k]...)
		payload = payload[k:]
	}
	return dst
}

// inMessage is one message read from the server; payload is valid until the next read.
type inMessage struct {
	typ      byte
	streamID uint32
	ts       uint32
	payload  []byte
}

// inStream is the reader's state of one chunk stream.
type inStream struct {
	known    bool // a type 0 or 1 header gave length and type
	ts       uint32
	delta    uint32
	length   uint32
	typ      byte
	streamID uint32
	ext      bool // the last header used the extended timestamp
	buf      []byte
	complete bool // buf holds a message already returned
}

// chunkReader reassembles the server's messages. It is used by one goroutine at a time.
type chunkReader struct {
	r         *bufio.Reader
	chunkSize uint32
	streams   map[byte]*inStream // keyed by csid; ids above 63 are refused
	hdr       [11]byte
	read      uint64 // bytes consumed, for acknowledgements
}

func newChunkReader(r *bufio.Reader) *chunkReader {
	return &chunkReader{r: r, chunkSize: 128, streams: map[byte]*inStream{}}
}

func (c *chunkReader) full(b []byte) error {
	n, err := io.ReadFull(c.r, b)
	c.read += uint64(n)
	return err
}

// setChunkSize applies the server's Set Chunk Size.
func (c *chunkReader) setChunkSize(v uint32) error {
	if v == 0 || v&0x80000000 != 0 {
		return fmt.Errorf("%w: chunk size %d", errChunk, v)
	}
	c.chunkSize = min(v, maxChunkSize)
	return nil
}

// next returns the next complete message.
func (c *chunkReader) next() (inMessage, error) {
	for {
		m, done, err := c.chunk()
		if err != nil || done {
			return m, err
		}
	}
}

// chunk reads one chunk and reports whether it completed a message.
func (c *chunkReader) chunk() (inMessage, bool, error) {
	b0, err := c.r.ReadByte()
	if err != nil {
		return inMessage{}, false, err
	}
	c.read++
	format, csid := b0>>6, b0&0x3f
	if csid < 2 {
		// 2- and 3-byte basic headers name chunk streams 64 and up: servers never use them
		// towards a publisher, and accepting them would let one hold 65,599 streams.
		return inMessage{}, false, fmt.Errorf("%w: chunk stream id above 63", errChunk)
	}
	s := c.streams[csid]
	if s == nil {
		if len(c.streams) >= maxInChunkStreams {
			return inMessage{}, false, fmt.Errorf("%w: more than %d chunk streams", errChunk, maxInChunkStreams)
		}
		s = &inStream{}
		c.streams[csid] = s
	}
	if s.complete {
		s.buf, s.complete = s.buf[:0], false
	}
	starting := len(s.buf) == 0
	size := [4]int{11, 7, 3, 0}[format]
	h := c.hdr[:size]
	if err := c.full(h); err != nil {
		return inMessage{}, false, err
	}
	var field uint32
	if format < 3 {
		field = uint32(h[0])<<16 | uint32(h[1])<<8 | uint32(h[2])
		s.ext = field == extendedTimestamp
	}
	if format < 2 {
		if !starting {
			return inMessage{}, false, fmt.Errorf("%w: new message header on chunk stream %d before its message completed", errChunk, csid)
		}
		s.length = uint32(h[3])<<16 | uint32(h[4])<<8 | uint32(h[5])
		s.typ = h[6]
		s.known = true
		if s.length > maxInMessage {
			return inMessage{}, false, fmt.Errorf("%w: message of %d bytes (type %d) over the limit of %d", errChunk, s.length, s.typ, maxInMessage)
		}
	} else if !s.known {
		return inMessage{}, false, fmt.Errorf("%w: chunk of type %d on chunk stream %d continues no message", errChunk, format, csid)
	}
	if format == 0 {
		s.streamID = binary.LittleEndian.Uint32(h[7:11])
	}
	if s.ext {
		var e [4]byte
		if err := c.full(e[:]); err != nil {
			return inMessage{}, false, err
		}
		if format < 3 {
			field = binary.BigEndian.Uint32(e[:])
		}
	}
	if starting {
		switch format {
		case 0:
			s.ts, s.delta = field, 0
		case 1, 2:
			s.delta = field
			s.ts += field
		default:
			s.ts += s.delta
		}
	}
	n := min(s.length-uint32(len(s.buf)), c.chunkSize)
	start := len(s.buf)
	s.buf = append(s.buf, make([]byte, n)...)
	if err := c.full(s.buf[start:]); err != nil {
		return inMessage{}, false, err
	}
	if uint32(len(s.buf)) < s.length {
		return inMessage{}, false, nil
	}
	s.complete = true
	return inMessage{typ: s.typ, streamID: s.streamID, ts: s.ts, payload: s.buf}, true, nil
}
