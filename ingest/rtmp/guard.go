package rtmp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// errProtocol marks a violation of the RTMP chunk stream or of our limits: the connection is
// closed and the reason logged.
var errProtocol = errors.New("rtmp protocol violation")

func violation(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errProtocol}, args...)...)
}

// RTMP message types (RTMP spec 1.0 §5.4, §7.1).
const (
	msgSetChunkSize   = 1
	msgAbort          = 2
	msgAck            = 3
	msgUserControl    = 4
	msgWindowAckSize  = 5
	msgSetPeerBW      = 6
	msgAudio          = 8
	msgVideo          = 9
	msgDataAMF3       = 15
	msgSharedObjAMF3  = 16
	msgCommandAMF3    = 17
	msgDataAMF0       = 18
	msgSharedObjAMF0  = 19
	msgCommandAMF0    = 20
	msgAggregate      = 22
	handshakeSize     = 1 + 1536 + 1536 // C0, C1, C2
	rtmpVersion       = 3
	maxChunkSizeValue = 0xffffff // larger sizes are equivalent (RTMP spec §5.4.1)
)

// limits bound what one connection may make the server hold.
type limits struct {
	maxMedia        uint32 // one audio or video message (rtmp.max_message_size)
	maxAMF          uint32 // one command or data message
	maxControl      uint32 // one protocol control message
	maxChunkStreams int
	// budget bounds the sum, over chunk streams, of the largest message each has declared:
	// go-rtmp keeps one buffer per chunk stream, as large as the largest message it carried.
	budget       uint64
	maxHeld      int    // bytes held back while command messages are incomplete
	minChunkSize uint32 // smallest Set Chunk Size accepted
	minAckWindow int32  // smallest Window Acknowledgement Size accepted
}

func newLimits(maxMessage int) limits {
	return limits{
		maxMedia:        uint32(maxMessage),
		maxAMF:          64 << 10,
		maxControl:      64,
		maxChunkStreams: 16,
		budget:          uint64(maxMessage) + 1<<20,
		maxHeld:         1 << 20,
		minChunkSize:    128,
		minAckWindow:    1024,
	}
}

// chunkState is the guard's view of one chunk stream.
type chunkState struct {
	known      bool // a type 0 or 1 header gave the message length and type
	length     uint32
	typ        byte
	received   uint32
	completed  bool
	largest    uint32 // largest message length declared on this chunk stream
	collecting bool
	collect    []byte // payload of a command, data or control message being received
}

// chunkGuard sits between the connection and go-rtmp: it parses the chunk stream (RTMP spec
// 1.0 §5.3) exactly as go-rtmp v0.0.7 does, and lets bytes through only once they are known
// to be within limits. go-rtmp enforces none of its own: it would buffer any message the
// 24-bit length field declares, create chunk streams without bound, panic on a continuation
// chunk without a message, and hand AMF0 bodies to a decoder that allocates what they
// declare. So:
//
//   - a header declaring a message over its type's limit, a new chunk stream past the limit,
//     or a sum of buffers over the budget is refused before go-rtmp sees the header;
//   - the payload of a command or data message is held back (with everything after it) until
//     the message is complete and its AMF0 is checked by validateAMF0;
//   - Set Chunk Size and Window Acknowledgement Size values are checked and followed.
//
// On a violation the bytes before it are delivered, then Read returns the violation error.
// Read is called by go-rtmp's connection goroutine only.
type chunkGuard struct {
	r   io.Reader
	lim limits

	handshake int // handshake bytes still to pass through
	chunkSize uint32
	streams   map[int]*chunkState
	total     uint64 // sum of chunkState.largest

	hdr     [18]byte // basic header (≤3) + message header (≤11) + extended timestamp (4)
	hdrLen  int
	cur     *chunkState
	pending uint32 // payload bytes of the current chunk still to come
	holding int    // command/data messages being collected: output is held while > 0

	readyBuf []byte // validated bytes waiting to be read
	readyOff int
	held     []byte

	err       error // sticky: returned once readyBuf is drained
	violation error // the protocol violation, if that is what ended the stream
}

func newChunkGuard(r io.Reader, lim limits) *chunkGuard {
	return &chunkGuard{r: r, lim: lim, handshake: handshakeSize, chunkSize: 128, streams: map[int]*chunkState{}}
}

// Violation returns the protocol violation that ended the stream, or nil.
func (g *chunkGuard) Violation() error { return g.violation }

// srcErr returns the error the connection's reads ended with (io.EOF…), or nil.
func (g *chunkGuard) srcErr() error {
	if g.violation != nil {
		return nil
	}
	return g.err
}

// Read implements io.Reader.
func (g *chunkGuard) Read(p []byte) (int, error) {
	for {
		if g.readyOff < len(g.readyBuf) {
			n := copy(p, g.readyBuf[g.readyOff:])
			g.readyOff += n
			if g.readyOff == len(g.readyBuf) {
				g.readyBuf, g.readyOff = g.readyBuf[:0], 0
			}
			return n, nil
		}
		if g.err != nil {
			return 0, g.err
		}
		if len(p) == 0 {
			return 0, nil
		}
		n, err := g.r.Read(p)
		inPlace := g.feed(p[:n])
		if err != nil && g.err == nil {
			g.err = err
		}
		if inPlace > 0 {
			return inPlace, nil
		}
	}
}

// feed parses b and routes it: the returned prefix of b may be delivered in place; later
// bytes go to readyBuf, or to held while a command message is incomplete. After a violation
// the rest is dropped.
func (g *chunkGuard) feed(b []byte) int {
	inPlace, segStart := 0, 0
	diverted := false
	flush := func(end int) {
		if end <= segStart {
			return
		}
		seg := b[segStart:end]
		segStart = end
		switch {
		case len(seg) == 0:
		case g.holding > 0:
			if len(g.held)+len(seg) > g.lim.maxHeld {
				g.fail(violation("more than %d bytes interleaved with an incomplete command", g.lim.maxHeld))
				return
			}
			g.held = append(g.held, seg...)
		case !diverted:
			inPlace = end
		default:
			g.readyBuf = append(g.readyBuf, seg...)
		}
	}
	fail := func(cut int, err error) int {
		flush(cut)
		g.fail(err)
		return inPlace
	}
	hdrStart := 0 // where the header being parsed started in b (0: in an earlier call)
	for i := 0; i < len(b) && g.err == nil; {
		switch {
		case g.handshake > 0:
			if g.handshake == handshakeSize && b[i] != rtmpVersion {
				return fail(i, violation("not an rtmp client (version byte 0x%02x)", b[i]))
			}
			n := min(g.handshake, len(b)-i)
			g.handshake -= n
			i += n
		case g.pending > 0:
			start := i
			n := int(min(g.pending, uint32(len(b)-i)))
			cs := g.cur
			if cs.collecting {
				cs.collect = append(cs.collect, b[i:i+n]...)
			}
			i += n
			g.pending -= uint32(n)
			cs.received += uint32(n)
			if g.pending > 0 || cs.received < cs.length {
				break
			}
			cs.completed = true
			if !cs.collecting {
				break
			}
			wasHolding := g.holding > 0
			if wasHolding {
				flush(i) // the end of the message joins what is held
			}
			if err := g.complete(cs); err != nil {
				return fail(start, err)
			}
			if wasHolding && g.holding == 0 { // release what was held, in order
				g.readyBuf = append(g.readyBuf, g.held...)
				g.held = g.held[:0]
				diverted = true
			}
		default:
			if g.hdrLen == 0 {
				hdrStart = i
			}
			g.hdr[g.hdrLen] = b[i]
			g.hdrLen++
			i++
			if g.hdrLen < g.headerSize() {
				break
			}
			startsHold, err := g.header()
			g.hdrLen = 0
			if err != nil {
				return fail(hdrStart, err)
			}
			if startsHold {
				flush(i) // the header goes out; the payload is held
				if g.holding == 0 {
					diverted = true
				}
				g.holding++
			}
		}
	}
	if g.err == nil {
		flush(len(b))
	}
	return inPlace
}

func (g *chunkGuard) fail(err error) {
	if g.err == nil {
		g.err, g.violation = err, err
		g.held = nil
	}
}

// headerSize returns the size of the chunk header being read, as far as its bytes so far
// tell (go-rtmp reads no extended timestamp on type 3 chunks, so neither does this).
func (g *chunkGuard) headerSize() int {
	basic := 1
	switch g.hdr[0] & 0x3f {
	case 0:
		basic = 2
	case 1:
		basic = 3
	}
	f := g.hdr[0] >> 6
	n := basic + [4]int{11, 7, 3, 0}[f]
	if f < 3 && g.hdrLen >= basic+3 && g.hdr[basic] == 0xff && g.hdr[basic+1] == 0xff && g.hdr[basic+2] == 0xff {
		n += 4
	}
	return n
}

// header applies a complete chunk header; it reports whether the chunk starts a message
// whose payload must be held until it is validated.
func (g *chunkGuard) header() (bool, error) {
	h := g.hdr[:g.hdrLen]
	f := h[0] >> 6
	csid, basic := int(h[0]&0x3f), 1
	switch csid {
	case 0:
		csid, basic = int(h[1])+64, 2
	case 1:
		csid, basic = int(h[2])*256+int(h[1])+64, 3
	}
	cs := g.streams[csid]
	if cs == nil {
		if len(g.streams) >= g.lim.maxChunkStreams {
			return false, violation("more than %d chunk streams", g.lim.maxChunkStreams)
		}
		cs = &chunkState{}
		g.streams[csid] = cs
	}
	if cs.completed {
		cs.received, cs.completed = 0, false
	}
	mh := h[basic:]
	switch f {
	case 0, 1:
		if cs.received > 0 {
			return false, violation("new message header on chunk stream %d before its message completed", csid)
		}
		cs.length = uint32(mh[3])<<16 | uint32(mh[4])<<8 | uint32(mh[5])
		cs.typ = mh[6]
		cs.known = true
	default:
		if !cs.known {
			return false, violation("chunk of type %d on chunk stream %d continues no message", f, csid)
		}
	}
	hold := false
	if cs.received == 0 {
		limit, err := g.typeLimit(cs.typ)
		if err != nil {
			return false, err
		}
		switch {
		case cs.length == 0:
			return false, violation("empty message of type %d", cs.typ)
		case cs.length > limit:
			return false, violation("message of %d bytes (type %d) over the limit of %d", cs.length, cs.typ, limit)
		}
		if cs.length > cs.largest {
			g.total += uint64(cs.length - cs.largest)
			cs.largest = cs.length
			if g.total > g.lim.budget {
				return false, violation("chunk streams declare %d bytes of messages, over the budget of %d", g.total, g.lim.budget)
			}
		}
		cs.collect = cs.collect[:0]
		switch cs.typ {
		case msgSetChunkSize, msgWindowAckSize:
			cs.collecting = true
		case msgDataAMF0, msgCommandAMF0:
			cs.collecting, hold = true, true
		default:
			cs.collecting = false
		}
	}
	g.cur = cs
	g.pending = min(cs.length-cs.received, g.chunkSize)
	return hold, nil
}

// typeLimit returns the largest message of a type, or an error for types go-rtmp cannot
// handle (it would end the session on them anyway, less clearly).
func (g *chunkGuard) typeLimit(typ byte) (uint32, error) {
	switch typ {
	case msgSetChunkSize, msgAbort, msgAck, msgUserControl, msgWindowAckSize, msgSetPeerBW:
		return g.lim.maxControl, nil
	case msgAudio, msgVideo:
		return g.lim.maxMedia, nil
	case msgDataAMF0, msgCommandAMF0:
		return g.lim.maxAMF, nil
	case msgDataAMF3, msgCommandAMF3, msgSharedObjAMF3:
		return 0, violation("amf3 messages (type %d) are not supported", typ)
	case msgSharedObjAMF0:
		return 0, violation("shared object messages are not supported")
	case msgAggregate:
		return 0, violation("aggregate messages are not supported")
	}
	return 0, violation("unknown message type %d", typ)
}

// complete checks a collected message and applies what it changes.
func (g *chunkGuard) complete(cs *chunkState) error {
	switch cs.typ {
	case msgSetChunkSize:
		if len(cs.collect) < 4 {
			return violation("set chunk size of %d bytes", len(cs.collect))
		}
		v := binary.BigEndian.Uint32(cs.collect)
		if v&0x80000000 != 0 || v < g.lim.minChunkSize {
			return violation("chunk size %d out of range [%d, 2^31)", v, g.lim.minChunkSize)
		}
		g.chunkSize = min(v, maxChunkSizeValue) // go-rtmp clamps the same way
	case msgWindowAckSize:
		if len(cs.collect) < 4 {
			return violation("window acknowledgement size of %d bytes", len(cs.collect))
		}
		if v := int32(binary.BigEndian.Uint32(cs.collect)); v < g.lim.minAckWindow {
			return violation("window acknowledgement size %d below %d", v, g.lim.minAckWindow)
		}
	case msgDataAMF0, msgCommandAMF0:
		g.holding--
		if err := validateAMF0(cs.collect); err != nil {
			return fmt.Errorf("%w: message type %d: %w", errProtocol, cs.typ, err)
		}
	}
	if cap(cs.collect) > 4<<10 {
		cs.collect = nil // a large command is rare: do not keep its buffer
	}
	return nil
}
