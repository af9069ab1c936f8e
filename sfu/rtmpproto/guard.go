package rtmpproto

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Guard sits between a connection and a server library that enforces no limits of its own
// (go-rtmp v0.0.7: it buffers any message the 24-bit length field declares, creates chunk
// streams without bound, panics on a continuation chunk without a message, and hands AMF0
// bodies to a decoder that allocates what they declare). It parses the chunk stream exactly as
// go-rtmp does (no extended timestamp on type 3 chunks) and lets bytes through only once they
// are known to be within Limits:
//
//   - a header declaring a message over its type's limit, a new chunk stream past the limit,
//     or a sum of buffers over the budget is refused before the library sees the header;
//   - the payload of a command or data message is held back (with everything after it) until
//     the message is complete and its AMF0 passes ValidateAMF0;
//   - Set Chunk Size and Window Acknowledgement Size values are checked and followed.
//
// On a violation the bytes before it are delivered, then Read returns the violation error.
// Read is called by one goroutine at a time.
type Guard struct {
	r io.Reader
	d demux

	handshake int      // handshake bytes still to pass through
	hdr       [18]byte // basic header (≤3) + message header (≤11) + extended timestamp (4)
	hdrLen    int
	holding   int // command/data messages being collected: output is held while > 0

	readyBuf []byte // validated bytes waiting to be read
	readyOff int
	held     []byte

	err       error // sticky: returned once readyBuf is drained
	violation error // the protocol violation, if that is what ended the stream
}

// NewGuard returns a Guard reading r from the client's first handshake byte.
func NewGuard(r io.Reader, lim Limits) *Guard {
	return &Guard{r: r, d: newDemux(lim, false, false), handshake: HandshakeSize}
}

// Violation returns the protocol violation that ended the stream, or nil.
func (g *Guard) Violation() error { return g.violation }

// SourceErr returns the error the underlying reads ended with (io.EOF…), or nil.
func (g *Guard) SourceErr() error {
	if g.violation != nil {
		return nil
	}
	return g.err
}

// Read implements io.Reader.
func (g *Guard) Read(p []byte) (int, error) {
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
func (g *Guard) feed(b []byte) int {
	inPlace, segStart := 0, 0
	diverted := false
	flush := func(end int) {
		if end <= segStart {
			return
		}
		seg := b[segStart:end]
		segStart = end
		switch {
		case g.holding > 0:
			if len(g.held)+len(seg) > g.d.lim.MaxHeld {
				g.fail(violation("more than %d bytes interleaved with an incomplete command", g.d.lim.MaxHeld))
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
			if g.handshake == HandshakeSize && b[i] != Version {
				return fail(i, violation("not an rtmp client (version byte 0x%02x)", b[i]))
			}
			n := min(g.handshake, len(b)-i)
			g.handshake -= n
			i += n
		case g.d.pending > 0:
			start := i
			n := min(g.d.pending, uint32(len(b)-i))
			cs := g.d.cur
			if cs.collect {
				cs.buf = append(cs.buf, b[i:i+int(n)]...)
			}
			i += int(n)
			if !g.d.advance(n) || !cs.collect {
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
			if g.hdrLen < g.d.headerSize(g.hdr[:g.hdrLen]) {
				break
			}
			cs, err := g.d.header(g.hdr[:g.hdrLen])
			g.hdrLen = 0
			if err != nil {
				return fail(hdrStart, err)
			}
			if cs.received == 0 && (cs.typ == TypeDataAMF0 || cs.typ == TypeCommandAMF0) {
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

func (g *Guard) fail(err error) {
	if g.err == nil {
		g.err, g.violation = err, err
		g.held = nil
	}
}

// complete checks a collected message and applies what it changes.
func (g *Guard) complete(cs *chunkStream) error {
	switch cs.typ {
	case TypeSetChunkSize:
		if err := g.d.setChunkSize(cs.buf); err != nil {
			return err
		}
	case TypeWindowAckSize:
		if len(cs.buf) < 4 {
			return violation("window acknowledgement size of %d bytes", len(cs.buf))
		}
		if v := int32(binary.BigEndian.Uint32(cs.buf)); v < g.d.lim.MinAckWindow {
			return violation("window acknowledgement size %d below %d", v, g.d.lim.MinAckWindow)
		}
	case TypeDataAMF0, TypeCommandAMF0:
		g.holding--
		if err := ValidateAMF0(cs.buf); err != nil {
			return fmt.Errorf("%w: message type %d: %w", ErrProtocol, cs.typ, err)
		}
	}
	if cap(cs.buf) > 4<<10 {
		cs.buf = nil // a large command is rare: do not keep its buffer
	}
	return nil
}
