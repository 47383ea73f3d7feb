package etcd

import (
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/storegate/storegate/gate"
)

// Limits bound what callers may hold open at once, per caller and in
// total, so that a caller with no rights cannot exhaust the gateway or
// etcd. Beyond them, a stream is refused and a watch create is canceled,
// both with etcd's "etcdserver: too many requests".
type Limits struct {
	// StreamsPerCaller and Streams bound open streaming RPCs (watch and
	// keep-alive streams, Observe, RangeStream, Snapshot); defaults 1024
	// and 16384.
	StreamsPerCaller, Streams int
	// WatchesPerCaller and Watches bound watches created and not yet
	// canceled; defaults 8192 and 65536.
	WatchesPerCaller, Watches int
}

func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.StreamsPerCaller, 1024)
	def(&l.Streams, 16384)
	def(&l.WatchesPerCaller, 8192)
	def(&l.Watches, 65536)
	return l
}

// counter counts what each caller holds against a per-caller and a total
// bound.
type counter struct {
	mu       sync.Mutex
	per      map[spiffeid.ID]int
	total    int
	maxPer   int
	maxTotal int
}

func newCounter(maxPer, maxTotal int) *counter {
	return &counter{per: map[spiffeid.ID]int{}, maxPer: maxPer, maxTotal: maxTotal}
}

// acquire takes one slot for id, or reports that a bound is reached.
func (c *counter) acquire(id gate.Identity) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.total >= c.maxTotal || c.per[id.ID] >= c.maxPer {
		return false
	}
	c.total++
	c.per[id.ID]++
	return true
}

// release gives back a slot acquire took.
func (c *counter) release(id gate.Identity) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total--
	if n := c.per[id.ID] - 1; n > 0 {
		c.per[id.ID] = n
	} else {
		delete(c.per, id.ID)
	}
}

// held is what id holds and what all hold.
func (c *counter) held(id gate.Identity) (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.per[id.ID], c.total
}

type limiters struct {
	streams, watches *counter
}

func newLimiters(l Limits) limiters {
	l = l.withDefaults()
	return limiters{streams: newCounter(l.StreamsPerCaller, l.Streams), watches: newCounter(l.WatchesPerCaller, l.Watches)}
}
