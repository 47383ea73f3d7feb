package policy

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/storegate/storegate/gate"
)

// benchOps are the ops the benchmarks decide, with the effect each must get.
var benchOps = []struct {
	name string
	op   *gate.Op
	want gate.Effect
}{
	{"read-allowed", kvOp(gate.ActionRead, "/app/config/db"), gate.Allow},
	{"read-denied", kvOp(gate.ActionRead, "/other/x"), gate.Deny},
	{"read-deny-wins", kvOp(gate.ActionRead, "/app/secret/db"), gate.Deny},
	{"prefix-allowed", prefixOp(gate.ResourceKV, gate.ActionRead, "/app/config/"), gate.Allow},
	{"prefix-filtered", prefixOp(gate.ResourceKV, gate.ActionRead, "/app/"), gate.Filter},
}

// floorPolicy is the cheapest policy that still reads the input: what any
// decision costs before a policy does any work (the input document, OPA's
// evaluation context, the result).
const floorPolicy = "package storegate.authz\n\nallow if input.op.range == false\n"

// BenchmarkAuthorize decides ops for the web caller with the shipped
// intentions plus 20, 1,000 and 10,000 more, with the compiled intentions
// (the fast path) and with OPA: the cost must not grow with them, and an
// allowed op through the fast path allocates nothing. The
// floor sub-benchmark calibrates the machine: the same decision with a
// one-line policy. cpu-ns/op counts the CPU time of every thread, the
// garbage collector's included, so that a busy machine shows up in ns/op
// rather than in it.
func BenchmarkAuthorize(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	floor := b.TempDir()
	writeFile(b, floor, "authz.rego", floorPolicy)
	e := mustLoad(b, floor, ModeEnforce)
	b.Run("floor", func(b *testing.B) {
		b.ReportAllocs()
		cpu := cpuTime()
		op := kvOp(gate.ActionRead, "/app/config/db")
		for b.Loop() {
			if d, err := e.Authorize(ctx, web, op); err != nil || d.Effect != gate.Allow {
				b.Fatalf("Authorize = %v, %v", d, err)
			}
		}
		b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
	})
	for _, be := range benchEngines(b) {
		for _, bo := range benchOps {
			b.Run(fmt.Sprintf("intentions=%d/%s/%s", be.n, be.name, bo.name), func(b *testing.B) {
				b.ReportAllocs()
				cpu := cpuTime()
				for b.Loop() {
					d, err := be.e.Authorize(ctx, web, bo.op)
					if err != nil || d.Effect != bo.want {
						b.Fatalf("Authorize = %v, %v; want %v", d, err, bo.want)
					}
				}
				b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

// benchEngine is one engine the benchmarks decide with: the shipped
// intentions plus n more, decided by the compiled intentions or by OPA.
type benchEngine struct {
	n    int
	name string // "compiled" or "opa"
	e    *Engine
}

// benchEngines loads the shipped intentions plus 20, 1,000 and 10,000 more
// for the compiled fast path, and plus 20 and 1,000 with it off (OPA).
func benchEngines(b *testing.B) []benchEngine {
	var out []benchEngine
	for _, n := range []int{20, 1000, 10000} {
		dir := scaledPolicy(b, n)
		out = append(out, benchEngine{n, "compiled", mustLoad(b, dir, ModeEnforce)})
		if n > 1000 {
			continue // OPA's cost with 1,000 already shows its slope
		}
		opa, err := Load(context.Background(), Config{Dir: dir, Logger: discardLogger(), EvalTimeout: mustLoadTimeout, DisableFastPath: true})
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, benchEngine{n, "opa", opa})
	}
	for _, be := range out {
		if got, want := be.e.Evaluator(), map[string]Evaluator{"compiled": EvaluatorCompiled, "opa": EvaluatorOPA}[be.name]; got != want {
			b.Fatalf("%d intentions, %s: decided by %q", be.n, be.name, got)
		}
	}
	return out
}

// BenchmarkAuthorizeLatency reports the p50 and p99 of single decisions
// (p50-ns, p99-ns) with the intentions of benchEngines: compiled, and OPA
// uncached and from the decision cache. The goals are a p50 under 2µs
// through the compiled intentions and under 20µs through OPA, flat in the
// number of intentions; `make bench` prints it, no test asserts a time.
func BenchmarkAuthorizeLatency(b *testing.B) {
	floor := b.TempDir()
	writeFile(b, floor, "authz.rego", floorPolicy)
	report := func(b *testing.B, e *Engine, op *gate.Op) {
		var p50, p99 time.Duration
		for b.Loop() {
			p50, p99 = latency(b, e, op, 2000)
		}
		b.ReportMetric(float64(p50.Nanoseconds()), "p50-ns")
		b.ReportMetric(float64(p99.Nanoseconds()), "p99-ns")
	}
	b.Run("floor", func(b *testing.B) {
		report(b, mustLoad(b, floor, ModeEnforce), kvOp(gate.ActionRead, "/app/config/db"))
	})
	for _, be := range benchEngines(b) {
		for _, bo := range benchOps {
			b.Run(fmt.Sprintf("intentions=%d/%s/%s", be.n, be.name, bo.name), func(b *testing.B) { report(b, be.e, bo.op) })
		}
		if be.name != "opa" {
			continue
		}
		// The decision cache in front of OPA (the compiled intentions
		// decide faster than a cache lookup, so they have none in front).
		dir := scaledPolicy(b, be.n)
		cached, err := Load(context.Background(), Config{Dir: dir, Logger: discardLogger(), CacheSize: 1 << 16, EvalTimeout: mustLoadTimeout, DisableFastPath: true})
		if err != nil {
			b.Fatal(err)
		}
		for _, bo := range benchOps {
			b.Run(fmt.Sprintf("intentions=%d/opa/%s/cached", be.n, bo.name), func(b *testing.B) { report(b, cached, bo.op) })
		}
	}
}

// latency measures rounds decisions of op one by one and returns the p50
// and p99.
func latency(tb testing.TB, e *Engine, op *gate.Op, rounds int) (p50, p99 time.Duration) {
	tb.Helper()
	ctx := context.Background()
	for range 200 { // warm up caches and the allocator
		if _, err := e.Authorize(ctx, web, op); err != nil {
			tb.Fatal(err)
		}
	}
	ds := make([]time.Duration, rounds)
	for i := range ds {
		start := time.Now()
		if _, err := e.Authorize(ctx, web, op); err != nil {
			tb.Fatal(err)
		}
		ds[i] = time.Since(start)
	}
	slices.Sort(ds)
	return ds[len(ds)/2], ds[len(ds)*99/100]
}
