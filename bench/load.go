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

// target is one way to reach etcd: directly, through etcd's gRPC proxy or
// through a storegate gateway.
type target struct {
	name     string
	endpoint string
	hop      *proc // the process between the bench and etcd; nil for direct
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
// i mod len(t.clients).
func load(ctx context.Context, t *target, op opKind, conc int, d time.Duration) sample {
	return closedLoop(ctx, conc, d, func(ctx context.Context, w, i int) error {
		c := t.clients[w%len(t.clients)]
		var err error
		switch op {
		case opRange:
			_, err = c.Get(ctx, rangeKey)
		case opPut:
			_, err = c.Put(ctx, fmt.Sprintf("%s%d", rangeKey, i%putKeys), value)
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
	for _, p := range []*proc{t.hop, etcd} {
		if p == nil {
			continue
		}
		if gone, err := p.Exited(); gone {
			return sample{errs: 1, err: p.failure(fmt.Errorf("exited: %v", err))}
		}
	}
	if warmup > 0 {
		if w := load(ctx, t, op, conc, warmup); w.errs > 0 {
			return w
		}
	}
	hop0, errH := cpuOf(t.hop)
	etcd0, errE := etcd.cpuTime()
	s := load(ctx, t, op, conc, d)
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
