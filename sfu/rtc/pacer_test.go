package rtc

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// pacerPacket is a media packet of size bytes to port, numbered n (bytes 4 to 8).
func pacerPacket(port uint16, n, size int) outPacket {
	b := make([]byte, size)
	b[0] = 0x80
	binary.BigEndian.PutUint32(b[4:], uint32(n)) //nolint:gosec // a test's numbers
	return outPacket{buf: b, addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)}
}

const ms = int64(time.Millisecond)

// A keyframe's burst to one viewer leaves a bucket's worth at once, then at most what the
// pace allows per tick, in order, all of it within maxPaceDelay.
func TestPacerSpreadsBurst(t *testing.T) {
	var pc pacer
	const n = 45
	for i := range n {
		if !pc.add(pacerPacket(1000, i, 1200), 0) {
			t.Fatal("the queue refused a packet")
		}
	}
	next, ticks := 0, 0
	var now int64
	for pc.queued > 0 {
		out := pc.release(now, nil)
		// The pace (the backlog over maxPaceDelay, 900 kB/s here) and the bucket
		// (paceBurst of it, at least maxPacket) allow this much, give or take a packet.
		rate := float64(n*1200) / maxPaceDelay.Seconds()
		allowed := 1 + int(max(rate*paceBurst.Seconds(), maxPacket)/1200)
		if len(out) > allowed {
			t.Fatalf("at %d ms: %d packets at once, want %d at most", now/ms, len(out), allowed)
		}
		for _, p := range out {
			if got := int(binary.BigEndian.Uint32(p.buf[4:])); got != next {
				t.Fatalf("packet %d released where %d was due", got, next)
			}
			next++
		}
		now += ms
		ticks++
		if now > int64(maxPaceDelay)+2*ms {
			t.Fatalf("%d of %d packets still waiting after %d ms", pc.queued, n, now/ms)
		}
	}
	if next != n || ticks < 10 {
		t.Fatalf("%d packets released over %d ticks: want all %d spread over many ticks", next, ticks, n)
	}
}

// Destinations are released in rounds: each one's packets together and in order, and none
// gets ahead of another by more than a packet or two.
func TestPacerInterleaves(t *testing.T) {
	var pc pacer
	const dests, n = 5, 30
	for i := range n {
		for d := range dests {
			pc.add(pacerPacket(uint16(1000+d), i, 1200), 0) //nolint:gosec // small numbers
		}
	}
	next := make([]int, dests)
	for now := int64(0); pc.queued > 0; now += ms {
		out := pc.release(now, nil)
		seen := map[uint16]bool{}
		for i, p := range out {
			port := p.addr.Port()
			if seen[port] && out[i-1].addr.Port() != port {
				t.Fatalf("at %d ms destination %d's packets are not together", now/ms, port)
			}
			seen[port] = true
			d := int(port) - 1000
			if got := int(binary.BigEndian.Uint32(p.buf[4:])); got != next[d] {
				t.Fatalf("destination %d: packet %d released where %d was due", d, got, next[d])
			}
			next[d]++
		}
		if lo, hi := slices.Min(next), slices.Max(next); hi-lo > 2 {
			t.Fatalf("at %d ms the destinations got %v packets: not in rounds", now/ms, next)
		}
		if now > int64(time.Second) {
			t.Fatal("packets still waiting after a second")
		}
	}
}

// A steady stream far above the least pace is not held back: once its average is known, its
// pace (paceFactor times the average) sends each frame well before the next.
func TestPacerFollowsRate(t *testing.T) {
	var pc pacer
	const frame = 33 * ms
	const packets = 100 // 1,000 bytes each: 24 Mbit/s at 30 frames a second
	sent, released := 0, 0
	for now := int64(0); now < int64(5*time.Second); now += ms {
		if now%frame == 0 {
			if now > int64(2*paceWindow) && pc.queued > 0 {
				t.Fatalf("at %d ms %d packets of the last frame are still waiting", now/ms, pc.queued)
			}
			for range packets {
				pc.add(pacerPacket(1000, sent, 1000), now)
				sent++
			}
		}
		released += len(pc.release(now, nil))
	}
	if sent-released > packets {
		t.Fatalf("%d of %d packets released", released, sent)
	}
}

// A destination's queue is bounded; a full one refuses media without affecting the others.
func TestPacerBoundsQueue(t *testing.T) {
	var pc pacer
	for i := range maxPaced {
		if !pc.add(pacerPacket(1000, i, 100), 0) {
			t.Fatalf("packet %d refused", i)
		}
	}
	if pc.add(pacerPacket(1000, maxPaced, 100), 0) {
		t.Fatal("a full queue took another packet")
	}
	if !pc.add(pacerPacket(1001, 0, 100), 0) {
		t.Fatal("another destination's packet refused")
	}
}

// Destinations idle for paceIdle are forgotten, and their state is reused.
func TestPacerForgetsIdle(t *testing.T) {
	var pc pacer
	pc.add(pacerPacket(1000, 0, 100), 0)
	pc.release(0, nil)
	pc.add(pacerPacket(1001, 0, 100), int64(paceIdle))
	pc.release(int64(paceIdle)+2*ms, nil) // 1000 idle for more than paceIdle
	if _, ok := pc.dests[pacerPacket(1000, 0, 8).addr]; ok || len(pc.dests) != 1 || len(pc.spare) != 1 {
		t.Fatalf("%d destinations remembered, %d spare: want the idle one forgotten", len(pc.dests), len(pc.spare))
	}
}

// Steady state, the pacer allocates nothing per packet.
func TestPacerAllocs(t *testing.T) {
	var pc pacer
	pkts := make([]outPacket, 100)
	for i := range pkts {
		pkts[i] = pacerPacket(uint16(1000+i%10), i, 1200) //nolint:gosec // small numbers
	}
	var out []outPacket
	now := int64(0)
	cycle := func() {
		for _, p := range pkts {
			pc.add(p, now)
		}
		for pc.queued > 0 {
			now += ms
			out = pc.release(now, out[:0])
		}
	}
	cycle()
	if a := testing.AllocsPerRun(20, cycle); a != 0 {
		t.Errorf("%.1f allocations per 100 packets, want 0", a)
	}
}
