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

// report prints the results table, the ratios of storegate to etcd's gRPC
// proxy and the throughput goal. It returns true when some run failed.
func report(w io.Writer, o options, targets []string, results map[caseKey]*sample, took time.Duration) (failed bool) {
	fmt.Fprintf(w, "storegate bench — %d CPUs (GOMAXPROCS %d), %s %s/%s, took %v\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH, took.Round(time.Second))
	fsync := "off"
	if o.fsync {
		fsync = "on"
	}
	fmt.Fprintf(w, "mTLS on every hop; etcd 1 member, WAL fsync %s; each case %v warm-up + %v measured x %d round(s); %d connection(s) per target\n",
		fsync, o.warmup, o.duration, o.rounds, o.conns)
	fmt.Fprintf(w, "range = linearizable Get of one key; put = 100-byte value over %d keys; storegate policy: %s intentions\n\n",
		putKeys, joinInts(o.intentions))

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "op\tconc\ttarget\tops/s\tp50\tp99\tvs-direct\tvs-grpc-proxy\thop-CPU/req\tetcd-CPU/req")
	var errs []string
	for _, op := range o.ops {
		for _, conc := range o.concs {
			base := results[caseKey{op, conc, direct}]
			proxy := results[caseKey{op, conc, grpcProxy}]
			for _, t := range targets {
				s := results[caseKey{op, conc, t}]
				if s == nil {
					continue
				}
				if s.errs > 0 || s.ops == 0 {
					failed = true
					why := s.err
					if why == nil {
						why = fmt.Errorf("no request completed")
					}
					errs = append(errs, fmt.Sprintf("%s conc=%d %s: %v", op, conc, t, why))
					fmt.Fprintf(tw, "%s\t%d\t%s\tFAILED\t-\t-\t-\t-\t-\t-\n", op, conc, t)
					continue
				}
				hop := "-"
				if t != direct {
					hop = cpuPerOp(s, s.hopCPU)
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\n", op, conc, t,
					s.throughput(), fmtDur(s.quantile(0.50)), fmtDur(s.quantile(0.99)),
					ratio(s.throughput(), ok(base, func(b *sample) float64 { return b.throughput() })),
					ratio(s.throughput(), ok(proxy, func(b *sample) float64 { return b.throughput() })),
					hop, cpuPerOp(s, s.etcdCPU))
			}
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "vs-*: throughput ratio; CPU/req: user+system CPU of the process over the measured run / requests (/proc, %v ticks)\n",
		time.Second/time.Duration(testenv.ClockTicks()))

	var gateways []string
	for _, t := range targets {
		if strings.HasPrefix(t, storegate) {
			gateways = append(gateways, t)
		}
	}
	if len(gateways) > 0 && slices.Contains(targets, grpcProxy) {
		fmt.Fprintf(w, "\nstoregate / grpc-proxy (throughput above 1x is better; latency and CPU below 1x are better)\n")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "op\tconc\ttarget\tops/s\tp50\tp99\thop-CPU/req")
		type worst struct {
			r    float64
			what string
		}
		lowest := map[string]*worst{}
		for _, op := range o.ops {
			for _, conc := range o.concs {
				p := results[caseKey{op, conc, grpcProxy}]
				for _, g := range gateways {
					s := results[caseKey{op, conc, g}]
					if !good(s) || !good(p) {
						fmt.Fprintf(tw, "%s\t%d\t%s\t-\t-\t-\t-\n", op, conc, g)
						lowest[g] = &worst{r: -1, what: "a run failed"}
						continue
					}
					r := s.throughput() / p.throughput()
					if lw := lowest[g]; lw == nil || (lw.r >= 0 && r < lw.r) {
						lowest[g] = &worst{r: r, what: fmt.Sprintf("%s conc=%d", op, conc)}
					}
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", op, conc, g,
						ratio(s.throughput(), p.throughput()),
						ratio(float64(s.quantile(0.50)), float64(p.quantile(0.50))),
						ratio(float64(s.quantile(0.99)), float64(p.quantile(0.99))),
						cpuRatio(s, p))
				}
			}
		}
		tw.Flush()
		fmt.Fprintln(w)
		for _, gv := range o.gateways {
			g := gv.name
			lw, ok := lowest[g]
			if !ok {
				continue
			}
			var verdict string
			switch {
			case lw == nil:
				verdict = "UNKNOWN (no runs)"
			case lw.r < 0:
				verdict = "UNKNOWN (" + lw.what + ")"
			case lw.r >= 1:
				verdict = fmt.Sprintf("MET (lowest %.2fx, %s)", lw.r, lw.what)
			default:
				verdict = fmt.Sprintf("NOT MET (lowest %.2fx, %s)", lw.r, lw.what)
			}
			cache := "decision cache on"
			if !gv.cache {
				cache = "decision cache off"
			}
			fmt.Fprintf(w, "goal: %s (%d intentions, %s) throughput >= grpc-proxy's in every case: %s\n", g, gv.intentions, cache, verdict)
		}
		fmt.Fprintln(w, "goal: policy evaluation < 20µs per op at p50, flat from 20 to 1000 intentions: measured by the policy package's Go benchmarks, not here")
	}

	if len(errs) > 0 {
		fmt.Fprintf(w, "\nFAILED runs (no numbers are reported for them):\n")
		for _, e := range errs {
			fmt.Fprintf(w, "  %s\n", strings.ReplaceAll(e, "\n", "\n    "))
		}
	}
	return failed
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
