package sfu

import (
	"fmt"
	"slices"
)

// MaxDataPayload bounds one data packet's payload (what data channels carry in one message
// without fragmentation trouble at every client).
const MaxDataPayload = 15 << 10

// ErrDataTooLarge refuses a data packet over MaxDataPayload.
var ErrDataTooLarge = fmt.Errorf("data payload over %d bytes", MaxDataPayload)

// DataPacket is application data for a room's participants (LiveKit's user packets): sent by
// the server through the API, delivered to the participants that take data (LiveKit sessions).
type DataPacket struct {
	Payload      []byte
	Topic        string
	Destinations []string // identities; empty: every participant that takes data
	Lossy        bool     // the unordered, unretransmitted channel
}

// DataReceiver takes the data packets sent to a participant. ReceiveData must not block (it
// queues or drops) and must not keep pkt beyond the call's end without copying it.
type DataReceiver interface {
	ReceiveData(pkt *DataPacket)
}

// receiverBox lets an interface value live in an atomic.Pointer.
type receiverBox struct{ r DataReceiver }

// SetDataReceiver makes r take the data packets sent to p (nil: p takes none). The session
// that owns p sets it; safe for concurrent use.
func (p *Participant) SetDataReceiver(r DataReceiver) {
	if r == nil {
		p.data.Store(nil)
		return
	}
	p.data.Store(&receiverBox{r})
}

// SendData delivers pkt to the room's participants that take data (those it names, when it
// names any) and returns how many took it.
func (r *Room) SendData(pkt *DataPacket) (int, error) {
	if len(pkt.Payload) > MaxDataPayload {
		return 0, ErrDataTooLarge
	}
	if r.isClosed() {
		return 0, ErrRoomClosed
	}
	n := 0
	for _, p := range r.Participants() {
		if len(pkt.Destinations) > 0 && !slices.Contains(pkt.Destinations, p.identity) {
			continue
		}
		if box := p.data.Load(); box != nil {
			box.r.ReceiveData(pkt)
			n++
		}
	}
	return n, nil
}
