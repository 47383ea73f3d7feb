package linearizable

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"
)

// store is a key-value API as one client sees it (etcd's client/v3 or
// Consul's api, through the gateways). Each call returns what the store
// answered, or an error.
type store interface {
	get(ctx context.Context, key string) (output, error)
	put(ctx context.Context, key, value string) (output, error)
	del(ctx context.Context, key string) (output, error)
	casRev(ctx context.Context, key string, rev int64, value string) (output, error)
	// casValue is a compare-and-swap on the value; ok is false when the
	// API has none (Consul).
	casValue(ctx context.Context, key, expect, value string) (out output, err error, ok bool)
}

// errorKind is what an error tells of the operation's outcome.
type errorKind int

const (
	// unacceptable: an error a client cannot act on, or one that could
	// hide a wrong answer; it fails the test.
	unacceptable errorKind = iota
	// outcomeUnknown: a client can act on it (retry), and the operation
	// may or may not have been applied.
	outcomeUnknown
	// notApplied: a client can act on it, and the request provably never
	// reached the store (a connection refused before anything was sent);
	// the operation is left out of the history, so a write that took
	// effect anyway shows as a value nobody wrote.
	notApplied
)

// errorClass sorts a client's error: label names it for the tally.
type errorClass func(err error) (label string, kind errorKind)

// tally counts errors by label, and keeps the unacceptable ones.
type tally struct {
	mu     sync.Mutex
	counts map[string]int
	bad    []string
}

func newTally() *tally { return &tally{counts: map[string]int{}} }

func (t *tally) add(label string, kind errorKind, op string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.counts[label]++
	if kind == unacceptable && len(t.bad) < 20 {
		t.bad = append(t.bad, fmt.Sprintf("%s: %v", op, err))
	}
}

func (t *tally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.counts) == 0 {
		return "none"
	}
	var parts []string
	for l, n := range t.counts {
		parts = append(parts, fmt.Sprintf("%d× %s", n, l))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

// client is one workload client: it issues random operations on keys
// until stop is closed, each bounded by opTimeout, and records them.
type client struct {
	id        int
	s         store
	keys      []string
	h         *history
	errs      *tally
	classify  errorClass
	opTimeout time.Duration
	rng       *rand.Rand
	seq       int
	// last is the client's last successful read of each key: CAS
	// compares against what the client saw.
	last map[string]output
}

func newClient(id int, s store, keys []string, h *history, errs *tally, classify errorClass) *client {
	return &client{id: id, s: s, keys: keys, h: h, errs: errs, classify: classify, opTimeout: 3 * time.Second,
		rng: rand.New(rand.NewPCG(uint64(id), 0x5eed)), last: map[string]output{}}
}

// run issues operations until stop is closed or ctx ends.
func (c *client) run(ctx context.Context, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		c.one(ctx)
	}
}

// backoff pauses the client after an error for 20–70ms, as a client
// retrying an unavailable service does (not a wait for readiness).
func (c *client) backoff(ctx context.Context) {
	t := time.NewTimer(time.Duration(20+c.rng.IntN(50)) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// one issues one random operation and records it.
func (c *client) one(ctx context.Context) {
	key := c.keys[c.rng.IntN(len(c.keys))]
	c.seq++
	value := fmt.Sprintf("c%d-%d", c.id, c.seq)
	in := input{Key: key, Value: value}
	octx, cancel := context.WithTimeout(ctx, c.opTimeout)
	defer cancel()
	prev, seen := c.last[key]
	var (
		out   output
		err   error
		rec   = record{Client: c.id}
		start = c.h.now()
	)
	switch n := c.rng.IntN(100); {
	case n < 40:
		in.Kind, in.Value = opGet, ""
		out, err = c.s.get(octx, key)
	case n < 60:
		in.Kind = opPut
		out, err = c.s.put(octx, key, value)
	case n < 70:
		in.Kind, in.Value = opDelete, ""
		out, err = c.s.del(octx, key)
	case n < 85 && seen && prev.Found:
		in.Kind, in.Expect = opCASValue, prev.Value
		var ok bool
		if out, err, ok = c.s.casValue(octx, key, prev.Value, value); ok {
			break
		}
		fallthrough
	default:
		in.Kind, in.Expect = opCASRev, ""
		if seen && prev.Found {
			in.ExpectRev = prev.Rev
		}
		out, err = c.s.casRev(octx, key, in.ExpectRev, value)
	}
	rec.Call, rec.Return = start, c.h.now()
	if err != nil {
		label, kind := c.classify(err)
		c.errs.add(label, kind, in.Kind.String(), err)
		c.backoff(ctx)
		if in.Kind == opGet || kind == notApplied {
			return // a failed read, or a write that never left: dropped
		}
		out = output{Unknown: true}
	}
	rec.In, rec.Out = in, out
	if s, ok := c.s.(*staleStore); ok && in.Kind == opGet {
		rec.Served = s.served(key, out)
	}
	if in.Kind == opGet && err == nil {
		c.last[key] = out
		if rec.Served != nil {
			c.last[key] = *rec.Served // the broken client acts on what it was served
		}
	}
	c.h.add(rec)
}

// staleStore is the deliberately broken variant: a client whose reads are
// served from a cache of its own earlier reads (the first value it saw of
// each key), as a caching layer that never invalidates would. It still
// reads the store for real, so that the same history can be checked with
// the true answers and with the stale ones.
type staleStore struct {
	store
	mu    sync.Mutex
	cache map[string]output
	stale int // reads served that differed from the store's answer
}

func newStaleStore(s store) *staleStore { return &staleStore{store: s, cache: map[string]output{}} }

// served is what the cache hands out for a read that returned real: the
// first value seen of key (cached when none is).
func (s *staleStore) served(key string, real output) *output {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.cache[key]
	if !ok || !c.Found {
		s.cache[key] = real
		return &real
	}
	if c.Value != real.Value || c.Found != real.Found {
		s.stale++
	}
	return &c
}

func (s *staleStore) staleReads() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stale
}

// readBack reads every key from the store itself (not through a gateway)
// after the clients have stopped, and records the reads, last in the
// history, as client id.
func readBack(ctx context.Context, id int, s store, keys []string, h *history) error {
	for _, k := range keys {
		start := h.now()
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, err := s.get(ctx, k)
		cancel()
		if err != nil {
			return fmt.Errorf("reading %s from the store: %w", k, err)
		}
		h.add(record{Client: id, In: input{Kind: opGet, Key: k}, Out: out, Call: start, Return: h.now()})
	}
	return nil
}

// keysUnder is n keys under prefix.
func keysUnder(prefix string, n int) []string {
	var ks []string
	for i := range n {
		ks = append(ks, fmt.Sprintf("%s%d", prefix, i))
	}
	return ks
}
