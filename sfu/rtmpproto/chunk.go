// Package rtmpproto is the RTMP protocol without sockets, shared by the ingest server and the
// broadcast client: the chunk stream (a message Reader, a Guard in front of a server library,
// and a writer), AMF0, the FLV tag bodies of audio and video messages with Enhanced RTMP, and
// the Limits that bound what a peer can make us hold. It works on io.Reader, bufio.Reader and
// byte slices, and opens nothing.
//
// Specification: Adobe RTMP 1.0 (2012); Adobe AMF0 (2006); Adobe FLV v10.1 annex E; veovera
// Enhanced RTMP v1 and v2.
package rtmpproto

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Message type ids (RTMP spec 1.0 §5.4, §7.1).
const (
	TypeSetChunkSize     = 1
	TypeAbort            = 2
	TypeAck              = 3
	TypeUserControl      = 4
	TypeWindowAckSize    = 5
	TypeSetPeerBandwidth = 6
	TypeAudio            = 8
	TypeVideo            = 9
	TypeDataAMF3         = 15
	TypeSharedObjectAMF3 = 16
	TypeCommandAMF3      = 17
	TypeDataAMF0         = 18
	TypeSharedObjectAMF0 = 19
	TypeCommandAMF0      = 20
	TypeAggregate        = 22
)

// Handshake and chunk size bounds (RTMP spec 1.0 §5.2, §5.4.1).
const (
	HandshakeSize     = 1 + 1536 + 1536 // C0, C1, C2
	Version           = 3
	DefaultChunkSize  = 128
	MaxChunkSize      = 0xffffff // larger sizes are equivalent
	extendedTimestamp = 0xffffff
)

// ErrProtocol marks a chunk stream that breaks the RTMP spec or our Limits.
var ErrProtocol = errors.New("rtmp protocol violation")

func violation(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
}

// Limits bound what one peer may make us hold. The zero value refuses everything.
type Limits struct {
	MaxMedia   uint32 // one audio or video message
	MaxAMF     uint32 // one AMF0 command or data message
	MaxControl uint32 // one protocol or user control message
	// MaxOther bounds messages of the other types (AMF3, shared objects, aggregate, unknown);
	// 0 refuses them.
	MaxOther        uint32
	MaxChunkStreams int
	// Budget bounds the sum, over chunk streams, of the largest message each has declared (a
	// reader keeps one buffer per chunk stream, as large as the largest message it carried);
	// 0 leaves it to MaxChunkStreams.
	Budget       uint64
	MinChunkSize uint32 // smallest Set Chunk Size accepted (at least 1)
	MaxHeld      int    // Guard: bytes held back while command messages are incomplete
	MinAckWindow int32  // Guard: smallest Window Acknowledgement Size accepted
}

// ServerLimits are the limits of a server taking publishers whose media messages are at most
// maxMessage bytes.
func ServerLimits(maxMessage int) Limits {
	return Limits{
		MaxMedia:        uint32(maxMessage),
		MaxAMF:          64 << 10,
		MaxControl:      64,
		MaxChunkStreams: 16,
		Budget:          uint64(maxMessage) + 1<<20,
		MaxHeld:         1 << 20,
		MinChunkSize:    128,
		MinAckWindow:    1024,
	}
}

// ClientLimits are the limits of a publishing client reading its server, which sends it
// commands and control messages only.
func ClientLimits() Limits {
	const maxIn = 256 << 10
	return Limits{MaxMedia: maxIn, MaxAMF: maxIn, MaxControl: maxIn, MaxOther: maxIn, MaxChunkStreams: 32, MinChunkSize: 1}
}

// messageLimit returns the largest message of a type, or why the type is refused.
func (l *Limits) messageLimit(typ byte) (uint32, error) {
	switch typ {
	case TypeSetChunkSize, TypeAbort, TypeAck, TypeUserControl, TypeWindowAckSize, TypeSetPeerBandwidth:
		return l.MaxControl, nil
	case TypeAudio, TypeVideo:
		return l.MaxMedia, nil
	case TypeDataAMF0, TypeCommandAMF0:
		return l.MaxAMF, nil
	}
	if l.MaxOther > 0 {
		return l.MaxOther, nil
	}
	switch typ {
	case TypeDataAMF3, TypeCommandAMF3, TypeSharedObjectAMF3:
		return 0, violation("amf3 messages (type %d) are not supported", typ)
	case TypeSharedObjectAMF0:
		return 0, violation("shared object messages are not supported")
	case TypeAggregate:
		return 0, violation("aggregate messages are not supported")
	}
	return 0, violation("unknown message type %d", typ)
}

// AppendChunkHeader appends a type 0 chunk header (RTMP spec 1.0 §5.3.1) declaring a message
// of length bytes. A timestamp of 0xffffff or more goes in the extended timestamp field
// (§5.3.1.3). csid must be in [2, 63].
func AppendChunkHeader(dst []byte, csid, typ byte, streamID, ts uint32, length int) []byte {
	ts24 := min(ts, extendedTimestamp)
	dst = append(dst, csid&0x3f,
		byte(ts24>>16), byte(ts24>>8), byte(ts24),
		byte(length>>16), byte(length>>8), byte(length),
		typ)
	dst = binary.LittleEndian.AppendUint32(dst, streamID)
	if ts24 == extendedTimestamp {
		dst = binary.BigEndian.AppendUint32(dst, ts)
	}
	return dst
}

// AppendMessage appends one message as chunks of at most chunkSize bytes of payload: a type 0
// chunk, then type 3 chunks, which repeat the extended timestamp when there is one (go-rtmp's
// writer leaves it out, and nginx-rtmp and ffmpeg then misread every message split into
// chunks once a stream passes 4 h 39 min). csid must be in [2, 63].
func AppendMessage(dst []byte, csid, typ byte, streamID, ts uint32, payload []byte, chunkSize int) []byte {
	return AppendMessageParts(dst, csid, typ, streamID, ts, nil, payload, chunkSize)
}

// AppendMessageParts is AppendMessage of the payload head followed by body, which are never
// joined: a frame goes from its reader's buffer into the chunks with one copy.
func AppendMessageParts(dst []byte, csid, typ byte, streamID, ts uint32, head, body []byte, chunkSize int) []byte {
	dst = AppendChunkHeader(dst, csid, typ, streamID, ts, len(head)+len(body))
	for first := true; first || len(head)+len(body) > 0; first = false {
		if !first {
			dst = append(dst, 0xc0|csid&0x3f)
			if ts >= extendedTimestamp {
				dst = binary.BigEndian.AppendUint32(dst, ts)
			}
		}
		k := min(len(head), chunkSize)
		dst = append(dst, head[:k]...)
		head = head[k:]
		n := min(len(body), chunkSize-k)
		dst = append(dst, body[:n]...)
		body = body[n:]
	}
	return dst
}

// chunkStream is the state of one chunk stream: headers of types 1 to 3 reuse the fields of
// the one before (RTMP spec 1.0 §5.3.1.2).
type chunkStream struct {
	known     bool // a type 0 or 1 header gave the message length and type
	typ       byte
	length    uint32
	streamID  uint32
	ts, delta uint32
	ext       bool // the last header of type 0 to 2 used the extended timestamp
	received  uint32
	completed bool
	largest   uint32 // largest message length declared on this chunk stream
	collect   bool
	buf       []byte // payload of the message being received, when collected
}

// demux follows the headers of a chunk stream, within Limits. Nothing in it is safe for
// concurrent use.
type demux struct {
	lim        Limits
	chunkSize  uint32
	type3Ext   bool // type 3 chunks repeat the extended timestamp (go-rtmp v0.0.7 reads none)
	collectAll bool // collect every payload (else control and AMF0 messages only)
	streams    map[uint32]*chunkStream
	total      uint64 // sum of chunkStream.largest
	cur        *chunkStream
	pending    uint32 // payload bytes of the current chunk still to come
}

func newDemux(lim Limits, type3Ext, collectAll bool) demux {
	return demux{lim: lim, chunkSize: DefaultChunkSize, type3Ext: type3Ext, collectAll: collectAll, streams: map[uint32]*chunkStream{}}
}

func basicHeader(h []byte) (csid uint32, size int) {
	switch h[0] & 0x3f {
	case 0:
		return uint32(h[1]) + 64, 2
	case 1:
		return uint32(h[2])*256 + uint32(h[1]) + 64, 3
	}
	return uint32(h[0] & 0x3f), 1
}

// headerSize returns the size of the chunk header that h starts, as far as its bytes tell:
// while it is more than len(h), more bytes are needed to know.
func (d *demux) headerSize(h []byte) int {
	basic := [3]int{2, 3, 1}[min(h[0]&0x3f, 2)] // csid 0: 2 bytes, 1: 3 bytes
	f := h[0] >> 6
	n := basic + [4]int{11, 7, 3, 0}[f]
	switch {
	case f < 3 && len(h) >= basic+3 && h[basic] == 0xff && h[basic+1] == 0xff && h[basic+2] == 0xff:
		n += 4
	case f == 3 && d.type3Ext && len(h) >= basic:
		if id, _ := basicHeader(h); d.streams[id] != nil && d.streams[id].ext {
			n += 4
		}
	}
	return n
}

// header applies the complete chunk header h and makes its chunk stream the current one.
func (d *demux) header(h []byte) (*chunkStream, error) {
	f := h[0] >> 6
	csid, basic := basicHeader(h)
	cs := d.streams[csid]
	if cs == nil {
		if len(d.streams) >= d.lim.MaxChunkStreams {
			return nil, violation("more than %d chunk streams", d.lim.MaxChunkStreams)
		}
		cs = &chunkStream{}
		d.streams[csid] = cs
	}
	if cs.completed {
		cs.received, cs.completed, cs.buf = 0, false, cs.buf[:0]
	}
	mh := h[basic:]
	var field uint32
	if f < 3 {
		field = uint32(mh[0])<<16 | uint32(mh[1])<<8 | uint32(mh[2])
		if cs.ext = field == extendedTimestamp; cs.ext {
			field = binary.BigEndian.Uint32(h[len(h)-4:])
		}
	}
	switch f {
	case 0, 1:
		if cs.received > 0 {
			return nil, violation("new message header on chunk stream %d before its message completed", csid)
		}
		cs.length = uint32(mh[3])<<16 | uint32(mh[4])<<8 | uint32(mh[5])
		cs.typ = mh[6]
		cs.known = true
		if f == 0 {
			cs.streamID = binary.LittleEndian.Uint32(mh[7:11])
		}
	default:
		if !cs.known {
			return nil, violation("chunk of type %d on chunk stream %d continues no message", f, csid)
		}
	}
	if cs.received == 0 {
		switch f {
		case 0:
			cs.ts, cs.delta = field, 0
		case 1, 2:
			cs.delta = field
			cs.ts += field
		default:
			cs.ts += cs.delta
		}
		if err := d.start(cs); err != nil {
			return nil, err
		}
	}
	d.cur = cs
	d.pending = min(cs.length-cs.received, d.chunkSize)
	return cs, nil
}

// start checks the message a chunk stream begins against the limits.
func (d *demux) start(cs *chunkStream) error {
	limit, err := d.lim.messageLimit(cs.typ)
	switch {
	case err != nil:
		return err
	case cs.length == 0:
		return violation("empty message of type %d", cs.typ)
	case cs.length > limit:
		return violation("message of %d bytes (type %d) over the limit of %d", cs.length, cs.typ, limit)
	}
	if cs.length > cs.largest {
		d.total += uint64(cs.length - cs.largest)
		cs.largest = cs.length
		if d.lim.Budget > 0 && d.total > d.lim.Budget {
			return violation("chunk streams declare %d bytes of messages, over the budget of %d", d.total, d.lim.Budget)
		}
	}
	switch cs.typ {
	case TypeSetChunkSize, TypeWindowAckSize, TypeDataAMF0, TypeCommandAMF0:
		cs.collect = true
	default:
		cs.collect = d.collectAll
	}
	return nil
}

// advance records n payload bytes of the current chunk (collected by the caller or not); it
// reports whether they complete the message.
func (d *demux) advance(n uint32) bool {
	cs := d.cur
	d.pending -= n
	cs.received += n
	if d.pending > 0 || cs.received < cs.length {
		return false
	}
	cs.completed = true
	return true
}

// setChunkSize applies the payload of a Set Chunk Size message.
func (d *demux) setChunkSize(p []byte) error {
	if len(p) < 4 {
		return violation("set chunk size of %d bytes", len(p))
	}
	v := binary.BigEndian.Uint32(p)
	if v&0x80000000 != 0 || v < max(d.lim.MinChunkSize, 1) {
		return violation("chunk size %d out of range [%d, 2^31)", v, max(d.lim.MinChunkSize, 1))
	}
	d.chunkSize = min(v, MaxChunkSize)
	return nil
}

// Message is one message read by a Reader; Payload is valid until the next read.
type Message struct {
	Type      byte
	StreamID  uint32
	Timestamp uint32
	Payload   []byte
}

// Reader reassembles the messages of a chunk stream after the handshake, as a client reads
// its server, within Limits. It is used by one goroutine at a time.
type Reader struct {
	r    *bufio.Reader
	d    demux
	read uint64
}

// NewReader returns a Reader of the chunk stream r carries.
func NewReader(r *bufio.Reader, lim Limits) *Reader {
	return &Reader{r: r, d: newDemux(lim, true, true)}
}

// BytesRead returns the bytes consumed, for acknowledgements.
func (r *Reader) BytesRead() uint64 { return r.read }

// SetChunkSize applies the payload of the peer's Set Chunk Size message.
func (r *Reader) SetChunkSize(payload []byte) error { return r.d.setChunkSize(payload) }

// ChunkStreams returns how many chunk streams the peer has opened.
func (r *Reader) ChunkStreams() int { return len(r.d.streams) }

// Next returns the next complete message.
func (r *Reader) Next() (Message, error) {
	for {
		h, err := r.r.Peek(1)
		for err == nil && len(h) < r.d.headerSize(h) {
			h, err = r.r.Peek(r.d.headerSize(h))
		}
		if err != nil {
			if len(h) > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return Message{}, err
		}
		cs, err := r.d.header(h)
		if err != nil {
			return Message{}, err
		}
		_, _ = r.r.Discard(len(h))
		n := r.d.pending
		start := len(cs.buf)
		cs.buf = append(cs.buf, make([]byte, n)...)
		k, err := io.ReadFull(r.r, cs.buf[start:])
		r.read += uint64(len(h) + k)
		if err != nil {
			return Message{}, err
		}
		if r.d.advance(n) {
			return Message{Type: cs.typ, StreamID: cs.streamID, Timestamp: cs.ts, Payload: cs.buf}, nil
		}
	}
}
