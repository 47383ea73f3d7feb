package main

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/storegate/storegate/internal/testenv"
)

// caseKey names one cell of the report: an operation at a concurrency
// against a target.
type caseKey struct {
	op     opKind
	conc   int
	target string
}

// etcdCase names one cell of the etcd table: an operation over a key set
// at a concurrency against a target.
type etcdCase struct {
	op     opKind
	keys   keySet
	conc   int
	target string
}

// goalConc is the concurrency the throughput goals are judged at.
const goalConc = 32

// etcdGoals are the throughput goals of storegate against etcd's gRPC
// proxy, per key set, at goalConc, for Range and Put alike.
var etcdGoals = []struct {
	keys keySet
	min  float64
}{{hotKeys, 1.2}, {distinctKeys, 1.0}}

// report prints the results table, the ratios of storegate to etcd's gRPC
// proxy and to direct, and the throughput goals. It returns true when some
// run failed.
func report(w io.Writer, o options, targets []string, results map[etcdCase]*sample, wrapped map[etcdCase]bool, took time.Duration) (failed bool) {
	fmt.Fprintf(w, "storegate bench — %d CPUs (GOMAXPROCS %d), %s %s/%s, took %v\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH, took.Round(time.Second))
	fsync := "off"
	if o.fsync {
		fsync = "on"
	}
	fmt.Fprintf(w, "mTLS on every hop; etcd 1 member, WAL fsync %s; each case %v warm-up + %v measured x %d round(s); %d connection(s) per target\n",
		fsync, o.warmup, o.duration, o.rounds, o.conns)
	fmt.Fprintf(w, "range = linearizable Get of one key; put = 100-byte value; storegate policy: %s intentions\n", joinInts(o.intentions))
	fmt.Fprintf(w, "keys 100 = every request one of %d keys (decisions cached after the first); keys distinct = every request the next of %d preloaded keys, per target and op (the decision cache is cold)\n",
		hotCount, distinctCount)
	fmt.Fprintln(w, "storegate = the gateway as shipped (compiled fast path, decision cache); -nofast = policy.fast_path false (every decision through OPA); -nocache = decision cache off")
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "op\tkeys\tconc\ttarget\tops/s\tp50\tp99\tvs-direct\tvs-grpc-proxy\thop-CPU/req\tetcd-CPU/req")
	var errs, wraps []string
	for _, op := range o.ops {
		for _, ks := range o.keySets {
			for _, conc := range o.concs {
				base := results[etcdCase{op, ks, conc, direct}]
				proxy := results[etcdCase{op, ks, conc, grpcProxy}]
				for _, t := range targets {
					k := etcdCase{op, ks, conc, t}
					s := results[k]
					if s == nil {
						continue
					}
					if wrapped[k] {
						wraps = append(wraps, fmt.Sprintf("%s keys=%s conc=%d %s", op, ks, conc, t))
					}
					if s.errs > 0 || s.ops == 0 {
						failed = true
						why := s.err
						if why == nil {
							why = fmt.Errorf("no request completed")
						}
						errs = append(errs, fmt.Sprintf("%s keys=%s conc=%d %s: %v", op, ks, conc, t, why))
						fmt.Fprintf(tw, "%s\t%s\t%d\t%s\tFAILED\t-\t-\t-\t-\t-\t-\n", op, ks, conc, t)
						continue
					}
					hop := "-"
					if t != direct {
						hop = cpuPerOp(s, s.hopCPU)
					}
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\n", op, ks, conc, t,
						s.throughput(), fmtDur(s.quantile(0.50)), fmtDur(s.quantile(0.99)),
						ratio(s.throughput(), ok(base, func(b *sample) float64 { return b.throughput() })),
						ratio(s.throughput(), ok(proxy, func(b *sample) float64 { return b.throughput() })),
						hop, cpuPerOp(s, s.etcdCPU))
				}
			}
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "vs-*: throughput ratio; CPU/req: user+system CPU of the process over the measured run / requests (/proc, %v ticks)\n",
		time.Second/time.Duration(testenv.ClockTicks()))
	if len(wraps) > 0 {
		fmt.Fprintf(w, "note: the distinct keys ran out and started over (keys revisited, decisions possibly cached) in: %s\n", strings.Join(wraps, "; "))
	}

	var gateways []string
	for _, t := range targets {
		if strings.HasPrefix(t, storegate) {
			gateways = append(gateways, t)
		}
	}
	if len(gateways) > 0 && (slices.Contains(targets, grpcProxy) || slices.Contains(targets, direct)) {
		fmt.Fprintf(w, "\nstoregate / grpc-proxy and / direct (throughput above 1x is better; latency and CPU below 1x are better)\n")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "op\tkeys\tconc\ttarget\tops/s÷proxy\tops/s÷direct\tp50÷proxy\tp99÷proxy\thop-CPU/req\tproxy-CPU/req\tCPU÷proxy")
		for _, op := range o.ops {
			for _, ks := range o.keySets {
				for _, conc := range o.concs {
					p := results[etcdCase{op, ks, conc, grpcProxy}]
					d := results[etcdCase{op, ks, conc, direct}]
					for _, g := range gateways {
						s := results[etcdCase{op, ks, conc, g}]
						if !good(s) {
							fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t-\t-\t-\t-\t-\t-\t-\n", op, ks, conc, g)
							continue
						}
						vsP, vsD, p50, p99, pcpu, cr := "-", "-", "-", "-", "-", "-"
						if good(p) {
							vsP = ratio(s.throughput(), p.throughput())
							p50 = ratio(float64(s.quantile(0.50)), float64(p.quantile(0.50)))
							p99 = ratio(float64(s.quantile(0.99)), float64(p.quantile(0.99)))
							pcpu = cpuPerOp(p, p.hopCPU)
							cr = cpuRatio(s, p)
						}
						if good(d) {
							vsD = ratio(s.throughput(), d.throughput())
						}
						fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", op, ks, conc, g,
							vsP, vsD, p50, p99, cpuPerOp(s, s.hopCPU), pcpu, cr)
					}
				}
			}
		}
		tw.Flush()
		fmt.Fprintln(w)
		for _, gv := range o.gateways {
			if !slices.Contains(gateways, gv.name) {
				continue
			}
			for _, goal := range etcdGoals {
				fmt.Fprintf(w, "goal: %s throughput >= %.1fx grpc-proxy's at conc %d over %s keys (range and put): %s\n",
					gv.name, goal.min, goalConc, goal.keys, goalVerdict(o, results, gv.name, goal.keys, goal.min))
			}
		}
		fmt.Fprintln(w, "goal: a decision in under 2µs at p50 through the compiled intentions (under 20µs through OPA), flat from 20 to 10,000 intentions, no allocation when allowed: BenchmarkAuthorize and BenchmarkAuthorizeLatency of the policy package (make bench runs them first)")
	}

	if len(errs) > 0 {
		fmt.Fprintf(w, "\nFAILED runs (no numbers are reported for them):\n")
		for _, e := range errs {
			fmt.Fprintf(w, "  %s\n", strings.ReplaceAll(e, "\n", "\n    "))
		}
	}
	return failed
}

// goalVerdict judges gateway g against the gRPC proxy at goalConc over the
// key set ks, for each measured op: MET when every ratio is at least min.
func goalVerdict(o options, results map[etcdCase]*sample, g string, ks keySet, min float64) string {
	if !slices.Contains(o.concs, goalConc) || !slices.Contains(o.keySets, ks) {
		return fmt.Sprintf("UNKNOWN (not measured: needs -conc %d and -keys %s)", goalConc, ks)
	}
	met := true
	var parts []string
	for _, op := range o.ops {
		s, p := results[etcdCase{op, ks, goalConc, g}], results[etcdCase{op, ks, goalConc, grpcProxy}]
		if !good(s) || !good(p) {
			return fmt.Sprintf("UNKNOWN (%s: a run failed or grpc-proxy was not measured)", op)
		}
		r := s.throughput() / p.throughput()
		met = met && r >= min
		parts = append(parts, fmt.Sprintf("%s %.2fx", op, r))
	}
	verdict := "NOT MET"
	if met {
		verdict = "MET"
	}
	return verdict + " (" + strings.Join(parts, ", ") + ")"
}

func good(s *sample) bool { return s != nil && s.errs == 0 && s.ops > 0 }

// ok applies f to s when s is a good sample, else returns 0.
func ok(s *sample, f func(*sample) float64) float64 {
	if !good(s) {
		return 0
	}
	return f(s)
}

func ratio(a, b float64) string {
	if b <= 0 || a < 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

func cpuPerOp(s *sample, d time.Duration) string {
	if s.cpuErr != nil {
		return "?"
	}
	return fmtDur(s.perOp(d))
}

func cpuRatio(s, p *sample) string {
	if s.cpuErr != nil || p.cpuErr != nil {
		return "?"
	}
	return ratio(float64(s.perOp(s.hopCPU)), float64(p.perOp(p.hopCPU)))
}

// fmtDur prints a duration in µs below a millisecond, in ms above.
func fmtDur(d time.Duration) string {
	switch {
	case d < 100*time.Microsecond:
		return fmt.Sprintf("%.1fµs", float64(d)/float64(time.Microsecond))
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	default:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	}
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ", ")
}
