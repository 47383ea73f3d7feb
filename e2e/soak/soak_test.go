package soak

import (
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// defaultDuration is the soak's length when STOREGATE_SOAK is not set (make
// test); make soak sets 10m.
const defaultDuration = 60 * time.Second

// Bounds on a gateway's growth over the soak, measured both times at rest
// (load stopped, every client closed, goroutines and fds steady for a
// second, no stream open), the start after a warm-up that has filled what
// fills once (policy and plugin compilation, decision and plugin-instance
// pools, the connections to the three etcd members and to the agent):
//
//   - goroutines ≤ start + 25: what legitimately varies at rest is a few
//     goroutines per pooled upstream connection (gRPC's to etcd, HTTP
//     keep-alives to the agent) and HAProxy's health checks in flight. A
//     leak per request or per stream would show as hundreds or thousands:
//     the soak opens a watch stream, a keep-alive stream or a blocking
//     query every few hundred ms and sends ~200 requests a second.
//   - open fds ≤ start + 15: the same pooled connections, and files the
//     plugin cache or the policy watcher may open; a leaked connection per
//     client connection (each worker round trips through HAProxy on its own
//     connections, which are all closed before the end is measured) would
//     show as hundreds.
//   - live heap (HeapAlloc after a forced GC) ≤ start + 32 MiB. Not a
//     multiple of the start: most of the start (some 65 MiB) is what the
//     four plugins' instances and the policy hold from the first request
//     on, so that 2 × start would let a leak of 60 MiB through. What may
//     still grow after the warm-up is bounded by design (decision caches,
//     pools, the allocator's own state: a few MiB); a leak of even 256
//     bytes per request exceeds 32 MiB within a 10-minute soak.
const (
	goroutineSlack = 25
	fdSlack        = 15
	heapSlack      = 32 << 20
)

// soakDuration is STOREGATE_SOAK, or defaultDuration.
func soakDuration(t *testing.T) time.Duration {
	t.Helper()
	s := os.Getenv("STOREGATE_SOAK")
	if s == "" {
		return defaultDuration
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		t.Fatalf("STOREGATE_SOAK=%q: want a positive Go duration (e.g. 10m): %v", s, err)
	}
	return d
}

// TestSoak proves that two gateway replicas under a long mixed load (both
// stores, watches, leases, locks and elections, sessions, blocking
// queries, plugins, denials and bad input) give only right answers — every
// read a value some write produced, every denial and refusal refused and
// absent from the store — and hold their heap, goroutines and open file
// descriptors within the bounds above. It logs each gateway's figures.
func TestSoak(t *testing.T) {
	d := soakDuration(t)
	warmup := min(max(d/10, 10*time.Second), time.Minute)
	t.Logf("soak: %v of load after a warm-up of %v", d, warmup)
	f := startFleet(t)

	warm := newTally()
	runLoad(t, f, "warmup", warmup, warm, nil)
	start := settleAll(t, f, "after the warm-up")

	tl := newTally()
	began := time.Now()
	runLoad(t, f, "soak", d, tl, func(q int) { logTrend(t, f, q) })
	elapsed := time.Since(began)
	end := settleAll(t, f, "after the soak")

	ops, unexpected, errs := tl.totals()
	t.Logf("soak: %d ops in %v (%.0f/s); errors by class: %s", ops, elapsed.Round(time.Second), float64(ops)/elapsed.Seconds(), errs)
	t.Logf("soak: ops by kind: %s", tl.opsSummary())
	for i, g := range f.gateways {
		s, e := start[i], end[i]
		t.Logf("soak: gateway g%d | heap live %s -> %s (in use %s -> %s) | goroutines %d -> %d | fds %d -> %d | streams open %d | decisions during the soak: allow=%.0f deny=%.0f",
			i, mib(s.HeapAlloc), mib(e.HeapAlloc), mib(s.HeapInuse), mib(e.HeapInuse), s.Goroutines, e.Goroutines,
			s.FDs, e.FDs, e.Streams, e.Decisions["allow"]-s.Decisions["allow"], e.Decisions["deny"]-s.Decisions["deny"])
		if gone, err := g.Proc.Exited(); gone {
			t.Errorf("gateway g%d exited during the soak: %v", i, err)
		}
		if n := e.Decisions["allow"] - s.Decisions["allow"]; n == 0 {
			t.Errorf("gateway g%d decided nothing during the soak: the load did not go through both replicas", i)
		}
		if e.Goroutines > s.Goroutines+goroutineSlack {
			t.Errorf("gateway g%d: goroutines grew from %d to %d (bound: start + %d)", i, s.Goroutines, e.Goroutines, goroutineSlack)
		}
		if e.FDs > s.FDs+fdSlack {
			t.Errorf("gateway g%d: open fds grew from %d to %d (bound: start + %d)", i, s.FDs, e.FDs, fdSlack)
		}
		if bound := s.HeapAlloc + heapSlack; e.HeapAlloc > bound {
			t.Errorf("gateway g%d: live heap grew from %s to %s (bound: %s)", i, mib(s.HeapAlloc), mib(e.HeapAlloc), mib(bound))
		}
	}
	for _, tt := range []*tally{warm, tl} {
		tt.mu.Lock()
		if tt.nWrong > 0 {
			t.Errorf("%d wrong answers; the first ones:\n%s", tt.nWrong, joinLines(tt.wrong))
		}
		tt.mu.Unlock()
	}
	// No fault is injected: an unexpected error is tolerated only as a
	// rare hiccup of two shared cores (a deadline), at most 1 in 1000 ops.
	if unexpected*1000 > ops {
		tl.mu.Lock()
		t.Errorf("%d unexpected errors in %d ops (more than 1 in 1000); the first of each class:\n%s", unexpected, ops, joinLines(tl.firstErrs))
		tl.mu.Unlock()
	} else if unexpected > 0 {
		tl.mu.Lock()
		t.Logf("soak: %d unexpected errors (tolerated: at most 1 in 1000 ops); the first of each class:\n%s", unexpected, joinLines(tl.firstErrs))
		tl.mu.Unlock()
	}
}

// logTrend logs each gateway's live heap and goroutines under load, at
// quarter q of the soak: not bounded (the load is running), but it shows
// whether the heap climbs or has levelled off.
func logTrend(t *testing.T, f *fleet, q int) {
	t.Helper()
	for i, g := range f.gateways {
		fig, err := measure(t.Context(), g)
		if err != nil {
			t.Errorf("gateway g%d at %d/4 of the soak: %v", i, q, err)
			continue
		}
		t.Logf("soak: gateway g%d at %d/4, under load | heap live %s (in use %s) | goroutines %d | fds %d | streams open %d",
			i, q, mib(fig.HeapAlloc), mib(fig.HeapInuse), fig.Goroutines, fig.FDs, fig.Streams)
	}
}

func joinLines(ls []string) string {
	s := ""
	for _, l := range ls {
		s += "  " + l + "\n"
	}
	return s
}

// settleAll waits until every gateway is at rest and returns their
// figures.
func settleAll(t *testing.T, f *fleet, when string) []figures {
	t.Helper()
	var out []figures
	for i, g := range f.gateways {
		fig, err := settled(t.Context(), g, 60*time.Second)
		if err != nil {
			t.Fatalf("gateway g%d %s: %v", i, when, err)
		}
		out = append(out, fig)
	}
	return out
}

// runLoad runs the mixed load (its keys named for run) for d on clients of its own, then stops it
// and closes every client and stream.
func runLoad(t *testing.T, f *fleet, run string, d time.Duration, tl *tally, sample func(quarter int)) {
	t.Helper()
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	etcdc := func(who string) *clientv3.Client {
		c := f.etcdClient(t, who)
		closers = append(closers, func() { c.Close() })
		return c
	}
	consulc := func(who string) (*api.Client, *http.Client) {
		c, tr := f.consulClient(t, who)
		closers = append(closers, tr.CloseIdleConnections)
		return c, &http.Client{Transport: tr}
	}
	w := newWorkers()
	for n := range 2 {
		e := &etcdLoad{run: run, f: f, t: tl, web: etcdc(web), reader: etcdc(reader)}
		w.every(100*time.Millisecond, e.kv(n))
		cweb, _ := consulc(web)
		c := &consulLoad{run: run, f: f, t: tl, web: cweb, direct: f.agent}
		w.every(100*time.Millisecond, c.kv(n))
	}
	e := &etcdLoad{run: run, f: f, t: tl, web: etcdc(web), reader: etcdc(reader)}
	w.every(250*time.Millisecond, e.watch(0))
	w.every(250*time.Millisecond, e.lease(0))
	e2 := &etcdLoad{run: run, f: f, t: tl, web: etcdc(web), reader: e.reader}
	w.every(300*time.Millisecond, e2.lockElect(0))
	cweb, hweb := consulc(web)
	c := &consulLoad{run: run, f: f, t: tl, web: cweb, direct: f.agent}
	w.every(250*time.Millisecond, c.session(0))
	cnobody, _ := consulc(nobody)
	r := &refusedLoad{f: f, t: tl, web: etcdc(web), reader: etcdc(reader), nobody: etcdc(nobody), cweb: cweb, cnobody: cnobody, hweb: hweb}
	w.every(500*time.Millisecond, r.denied)
	w.every(500*time.Millisecond, r.badInput)

	// The load's length is a timer, not a wait for readiness. At each
	// quarter, sample is called under load (the heap's trend).
	for q := 1; q <= 4; q++ {
		select {
		case <-time.After(d / 4):
		case <-t.Context().Done():
		}
		if sample != nil && q < 4 {
			sample(q)
		}
	}
	w.Stop()
	ops, _, errs := tl.totals()
	t.Logf("load: %d ops in %v; errors by class: %s", ops, d, errs)
}
