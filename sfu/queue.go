package sfu

import "sync/atomic"

// queue is a bounded single-producer single-consumer ring of packet deliveries. push is called
// only by the track's producer, pop only by the subscription's goroutine; neither blocks nor
// allocates.
type queue struct {
	buf  []entry
	mask uint64
	_    [48]byte // keep head and tail on their own cache lines
	head atomic.Uint64
	_    [56]byte
	tail atomic.Uint64
}

func newQueue(size int) *queue {
	n := 1
	for n < size {
		n <<= 1
	}
	return &queue{buf: make([]entry, n), mask: uint64(n - 1)}
}

// free returns how many entries push can take now (producer side).
func (q *queue) free() int {
	return len(q.buf) - int(q.tail.Load()-q.head.Load())
}

// push appends e and reports false when the ring is full (producer side).
func (q *queue) push(e entry) bool {
	t := q.tail.Load()
	if t-q.head.Load() >= uint64(len(q.buf)) {
		return false
	}
	q.buf[t&q.mask] = e
	q.tail.Store(t + 1)
	return true
}

// pop removes the oldest entry (consumer side).
func (q *queue) pop() (entry, bool) {
	h := q.head.Load()
	if h == q.tail.Load() {
		return entry{}, false
	}
	e := q.buf[h&q.mask]
	q.buf[h&q.mask] = entry{} // release the packet for the collector
	q.head.Store(h + 1)
	return e, true
}
