package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// opKind is a request the bench sends.
type opKind string

const (
	opRange opKind = "range" // Get of one existing key, /bench/k (linearizable)
	opPut   opKind = "put"   // Put of a 100-byte value to /bench/k<i%1000>
)

// rangeKey is the key every Range reads; it is written before the runs.
const rangeKey = "/bench/k"

// putKeys is the number of distinct keys Puts cycle through.
const putKeys = 1000

// value is the 100-byte value of every Put.
var value = strings.Repeat("v", 100)

// keySet is the keys the etcd table's requests go to: a small set that
// every request revisits (the decision cache is warm) or a large one that a
// target walks through, each request to the next key (the cache is cold).
type keySet string

const (
	hotKeys      keySet = "100"      // /bench/h/<i mod 100>
	distinctKeys keySet = "distinct" // the target's next key of /bench/d/<0..199999>
)

// Sizes of the key sets; distinctCount keys are preloaded for Range.
const (
	hotCount      = 100
	distinctCount = 200_000
)

func (ks keySet) size() int {
	if ks == distinctKeys {
		return distinctCount
	}
	return hotCount
}

// key is the name of key n of the set (n below its size).
func (ks keySet) key(n int) string {
	if ks == distinctKeys {
		return fmt.Sprintf("/bench/d/%06d", n)
	}
	return fmt.Sprintf("/bench/h/%03d", n)
}

// keyPicker hands out the keys of one (target, op, key set) across all its
// runs, warm-ups included: request i of a run goes to hot key i mod 100,
// while distinct keys come from a cursor the target keeps, so that no key
// repeats until all 200,000 were used (a run then reports the wraps).
type keyPicker struct {
	ks     keySet
	cursor atomic.Int64
}

func (p *keyPicker) pick(i int) string {
	if p.ks == distinctKeys {
		return p.ks.key(int((p.cursor.Add(1) - 1) % distinctCount))
	}
	return p.ks.key(i % hotCount)
}

// wrapped says whether the distinct cursor went past the last key.
func (p *keyPicker) wrapped() bool { return p.ks == distinctKeys && p.cursor.Load() > distinctCount }

// preload writes every key of the sets with value, in transactions of
// etcd's default maximum of 128 operations, 8 in flight.
func preload(ctx context.Context, c *clientv3.Client, sets []keySet) error {
	const batch, inFlight = 128, 8
	for _, ks := range sets {
		n := ks.size()
		sem := make(chan struct{}, inFlight)
		errs := make(chan error, (n+batch-1)/batch)
		var wg sync.WaitGroup
		for lo := 0; lo < n; lo += batch {
			ops := make([]clientv3.Op, 0, batch)
			for k := lo; k < min(lo+batch, n); k++ {
				ops = append(ops, clientv3.OpPut(ks.key(k), value))
			}
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if _, err := c.Txn(ctx).Then(ops...).Commit(); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return fmt.Errorf("preload %d keys of %s: %w", n, ks.key(0), err)
		}
	}
	return nil
}

// target is one way to reach etcd: directly, through etcd's gRPC proxy or
// through a storegate gateway.
type target struct {
	name     string
	endpoint string
	hop      *proc  // the process between the bench and etcd; nil for direct
	admin    string // the gateway's admin URL; "" for the others
	clients  []*clientv3.Client
}

// connect opens n clients (n gRPC connections) to the target.
func (t *target) connect(n int, tlsConf *tls.Config) error {
	for range n {
		c, err := clientv3.New(clientv3.Config{
			Endpoints:   []string{t.endpoint},
			TLS:         tlsConf,
			DialTimeout: 5 * time.Second,
			Logger:      zap.NewNop(),
		})
		if err != nil {
			return fmt.Errorf("%s: connect %s: %w", t.name, t.endpoint, err)
		}
		t.clients = append(t.clients, c)
	}
	return nil
}

func (t *target) close() {
	for _, c := range t.clients {
		c.Close()
	}
	t.clients = nil
}

// probe is a readiness check that reads rangeKey through c; a missing key
// is fine.
func probe(c *clientv3.Client) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := c.Get(ctx, rangeKey)
		return err
	}
}

// sample is what one measured run of (target, op, concurrency) produced.
// Several runs of the same case merge into one sample.
type sample struct {
	ops     int
	elapsed time.Duration
	lat     []time.Duration // per request, sorted after merge
	errs    int             // failed requests (a run stops at its first)
	err     error           // the first request error
	hopCPU  time.Duration   // CPU the hop process used during the run
	etcdCPU time.Duration   // CPU etcd used during the run
	cpuErr  error
}

func (s *sample) merge(o sample) {
	s.ops += o.ops
	s.elapsed += o.elapsed
	s.lat = append(s.lat, o.lat...)
	s.errs += o.errs
	s.hopCPU += o.hopCPU
	s.etcdCPU += o.etcdCPU
	if s.err == nil {
		s.err = o.err
	}
	if s.cpuErr == nil {
		s.cpuErr = o.cpuErr
	}
}

func (s *sample) throughput() float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(s.ops) / s.elapsed.Seconds()
}

// quantile returns the q-quantile of the sorted latencies.
func (s *sample) quantile(q float64) time.Duration {
	if len(s.lat) == 0 {
		return 0
	}
	i := int(q*float64(len(s.lat))+0.5) - 1
	return s.lat[min(max(i, 0), len(s.lat)-1)]
}

// perOp divides a CPU time by the number of requests.
func (s *sample) perOp(d time.Duration) time.Duration {
	if s.ops == 0 {
		return 0
	}
	return d / time.Duration(s.ops)
}

// load runs op against t with conc workers for d; worker i uses client
// i mod len(t.clients). Range reads rangeKey, Put writes over putKeys keys.
func load(ctx context.Context, t *target, op opKind, conc int, d time.Duration) sample {
	return loadKeys(ctx, t, op, func(i int) string {
		if op == opRange {
			return rangeKey
		}
		return fmt.Sprintf("%s%d", rangeKey, i%putKeys)
	}, conc, d)
}

// loadKeys is load with request i going to key(i).
func loadKeys(ctx context.Context, t *target, op opKind, key func(i int) string, conc int, d time.Duration) sample {
	return closedLoop(ctx, conc, d, func(ctx context.Context, w, i int) error {
		c := t.clients[w%len(t.clients)]
		var err error
		switch op {
		case opRange:
			_, err = c.Get(ctx, key(i))
		case opPut:
			_, err = c.Put(ctx, key(i), value)
		}
		return err
	})
}

// closedLoop runs conc workers for d, each sending its next request (do,
// worker w, request number i) as soon as the previous one returned. A
// failed request spoils the run: it is recorded and every worker stops,
// rather than measure a failing target.
func closedLoop(ctx context.Context, conc int, d time.Duration, do func(ctx context.Context, w, i int) error) sample {
	var (
		stop  atomic.Bool
		wg    sync.WaitGroup
		lats  = make([][]time.Duration, conc)
		first = make([]error, conc)
	)
	start := time.Now()
	timer := time.AfterFunc(d, func() { stop.Store(true) })
	defer timer.Stop()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			for i := w; !stop.Load() && ctx.Err() == nil; i += conc {
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				t0 := time.Now()
				err := do(rctx, w, i)
				el := time.Since(t0)
				cancel()
				if err != nil {
					first[w] = err
					stop.Store(true)
					break
				}
				lat = append(lat, el)
			}
			lats[w] = lat
		}()
	}
	wg.Wait()
	s := sample{elapsed: time.Since(start)}
	for w := range conc {
		s.ops += len(lats[w])
		s.lat = append(s.lat, lats[w]...)
		if first[w] != nil {
			s.errs++
			if s.err == nil {
				s.err = first[w]
			}
		}
	}
	return s
}

// measure warms t up with op for warmup, then runs it for d, reading the
// CPU time of the hop process and of etcd around the measured run only.
func measure(ctx context.Context, t *target, etcd *proc, op opKind, conc int, warmup, d time.Duration) sample {
	return measureKeys(ctx, t, etcd, op, nil, conc, warmup, d)
}

// measureKeys is measure with request i of a run going to key(i); nil key
// is load's keys.
func measureKeys(ctx context.Context, t *target, etcd *proc, op opKind, key func(int) string, conc int, warmup, d time.Duration) sample {
	run := func(d time.Duration) sample {
		if key == nil {
			return load(ctx, t, op, conc, d)
		}
		return loadKeys(ctx, t, op, key, conc, d)
	}
	for _, p := range []*proc{t.hop, etcd} {
		if p == nil {
			continue
		}
		if gone, err := p.Exited(); gone {
			return sample{errs: 1, err: p.failure(fmt.Errorf("exited: %v", err))}
		}
	}
	if warmup > 0 {
		if w := run(warmup); w.errs > 0 {
			return w
		}
	}
	hop0, errH := cpuOf(t.hop)
	etcd0, errE := etcd.cpuTime()
	s := run(d)
	hop1, errH1 := cpuOf(t.hop)
	etcd1, errE1 := etcd.cpuTime()
	s.cpuErr = firstErr(errH, errE, errH1, errE1)
	s.hopCPU, s.etcdCPU = hop1-hop0, etcd1-etcd0
	return s
}

func cpuOf(p *proc) (time.Duration, error) {
	if p == nil {
		return 0, nil
	}
	return p.cpuTime()
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// sortLatencies sorts the merged latencies of every sample for quantiles.
func sortLatencies(ss map[caseKey]*sample) {
	for _, s := range ss {
		slices.Sort(s.lat)
	}
}
