package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/grpc"
)

// traceConfig is a gateway's telemetry.traces section.
type traceConfig struct {
	exporter string  // none or otlp
	sampling float64 // ratio of root spans kept, in [0, 1]
}

// tracingVariant is one gateway of the tracing comparison.
type tracingVariant struct {
	label  string // the table's tracing column
	suffix string // of the process's name, hence of its files and service.instance.id
	traces traceConfig
}

// tracingVariants are the gateways the tracing table compares, the
// baseline first: no exporter (the gateway's default), the OTLP exporter
// at the default ratio of 1%, and at 100%.
func tracingVariants() []tracingVariant {
	return []tracingVariant{
		{label: "off", suffix: "off", traces: traceConfig{exporter: "none", sampling: 0.01}},
		{label: "1%", suffix: "1pct", traces: traceConfig{exporter: "otlp", sampling: 0.01}},
		{label: "100%", suffix: "100pct", traces: traceConfig{exporter: "otlp", sampling: 1}},
	}
}

// tracingPorts is how many ports tracingBench takes: an etcd front and an
// admin listener per variant. The receiver picks its own.
func tracingPorts() int { return 2 * len(tracingVariants()) }

// tracedGateway is a running gateway of the tracing comparison.
type tracedGateway struct {
	v    tracingVariant
	name string // the process name and its service.instance.id
	p    *proc
	t    *target
}

// tracingBench measures etcd Range through storegate with tracing off,
// sampled at 1% and at 100%, at each of -conc, rounds interleaved as in the
// etcd table, and prints its own table and goal line. It returns true when
// some run failed.
func tracingBench(ctx context.Context, o options, dir string, ports []int, gatewayBin string, etcd *proc, etcdURL string, pk *pki, certs map[string]svid) (bool, error) {
	rcv, err := startReceiver()
	if err != nil {
		return false, err
	}
	defer rcv.stop()
	clientTLS, err := pk.clientTLS(certs["bench"])
	if err != nil {
		return false, err
	}
	var gws []*tracedGateway
	defer func() { stopGateways(gws) }()
	for i, v := range tracingVariants() {
		gw, err := startTraced(ctx, o, rcv, v, dir, ports[2*i], ports[2*i+1], gatewayBin, etcdURL, pk, certs["gateway"], clientTLS)
		if err != nil {
			return false, err
		}
		gws = append(gws, gw)
	}

	results := map[caseKey]*sample{}
	windows := map[caseKey][]*spanWindow{}
	total, done := len(o.concs)*o.rounds*len(gws), 0
	start := time.Now()
	for _, conc := range o.concs {
		for round := range o.rounds {
			// As in the etcd table: each round starts at the next variant.
			for i := range gws {
				gw := gws[(i+round)%len(gws)]
				if ctx.Err() != nil {
					return false, fmt.Errorf("interrupted")
				}
				done++
				fmt.Fprintf(os.Stderr, "bench: tracing [%d/%d] range conc=%d %s round %d/%d\n",
					done, total, conc, gw.v.label, round+1, o.rounds)
				k := caseKey{op: opRange, conc: conc, target: gw.v.label}
				if results[k] == nil {
					results[k] = &sample{}
				}
				s, w := gw.measure(ctx, rcv, etcd, conc, o.warmup, o.duration)
				results[k].merge(s)
				if w != nil {
					windows[k] = append(windows[k], w)
				}
			}
		}
	}
	took := time.Since(start)
	// Stopping the gateways flushes the spans their batchers still hold:
	// on SIGTERM the gateway exports them before it exits, so the counts
	// are complete once the processes are gone.
	stopGateways(gws)
	gws = nil
	spans := map[caseKey]int64{}
	for k, ws := range windows {
		for _, w := range ws {
			spans[k] += rcv.count(w)
		}
	}
	sortLatencies(results)
	return reportTracing(os.Stdout, o, results, spans, took), nil
}

// startTraced starts the gateway of variant v; an exporting one sends its
// spans to rcv, and for it to be measured at 100% sampling, a Range through
// it must arrive at rcv as spans first.
func startTraced(ctx context.Context, o options, rcv *spanReceiver, v tracingVariant, dir string, etcdPort, adminPort int,
	gatewayBin, etcdURL string, pk *pki, cert svid, clientTLS *tls.Config) (*tracedGateway, error) {
	traces := v.traces
	g := gatewayVariant{name: storegate + "-trace-" + v.suffix, intentions: o.intentions[0], cache: true, traces: &traces}
	if traces.exporter == "otlp" {
		g.env = rcv.env(g.name)
	}
	p, t, err := startGateway(ctx, gatewayBin, dir, g, o.policies, etcdPort, adminPort, etcdURL, pk, cert, o.conns, clientTLS)
	if err != nil {
		return nil, err
	}
	gw := &tracedGateway{v: v, name: g.name, p: p, t: t}
	if traces.exporter == "otlp" && traces.sampling == 1 {
		if err := gw.checkExport(ctx, rcv); err != nil {
			stopGateways([]*tracedGateway{gw})
			return nil, err
		}
	}
	return gw, nil
}

// checkExport sends one Range and polls rcv until spans of gw arrive, or
// fails after a deadline that covers the batcher's default 5s delay: a
// gateway that exports nothing must not be measured as if it did.
func (gw *tracedGateway) checkExport(ctx context.Context, rcv *spanReceiver) error {
	if err := probe(gw.t.clients[0])(ctx); err != nil {
		return gw.p.failure(fmt.Errorf("a Range through it failed: %w", err))
	}
	return gw.p.waitReady(ctx, 30*time.Second, func(context.Context) error {
		if rcv.total(gw.name) == 0 {
			return fmt.Errorf("the OTLP receiver at %s got no span from it after a Range at 100%% sampling", rcv.addr)
		}
		return nil
	})
}

// measure is measure() with the spans counted: the warm-up runs first,
// then a span window of the receiver is opened around the measured run
// only. The window is nil when the warm-up failed.
func (gw *tracedGateway) measure(ctx context.Context, rcv *spanReceiver, etcd *proc, conc int, warmup, d time.Duration) (sample, *spanWindow) {
	if warmup > 0 {
		if w := load(ctx, gw.t, opRange, conc, warmup); w.errs > 0 {
			return w, nil
		}
	}
	w := rcv.open(gw.name)
	s := measure(ctx, gw.t, etcd, opRange, conc, 0, d)
	rcv.close(w)
	return s, w
}

// stopGateways closes the clients of each gateway, then stops it.
func stopGateways(gws []*tracedGateway) {
	for _, gw := range gws {
		gw.t.close()
		gw.p.stop()
	}
}

// spanReceiver is an OTLP/gRPC trace receiver on a loopback port, serving
// opentelemetry.proto.collector.trace.v1.TraceService. It counts the spans
// each gateway exports, told apart by the service.instance.id resource
// attribute the bench gives each one, and discards them.
type spanReceiver struct {
	collectortrace.UnimplementedTraceServiceServer
	srv  *grpc.Server
	addr string // host:port

	mu      sync.Mutex
	totals  map[string]int64         // spans received per instance
	windows map[string][]*spanWindow // per instance, in the order opened
}

// spanWindow counts the spans of one instance that start in [from, to),
// in Unix nanoseconds as OTLP has them; to is 0 while the window is open.
// Spans arrive batched, seconds after they end, so they are attributed by
// their start time, not by when they arrive.
type spanWindow struct {
	from, to int64
	spans    int64
}

// startReceiver serves a spanReceiver on a free loopback port.
func startReceiver() (*spanReceiver, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &spanReceiver{srv: grpc.NewServer(), addr: lis.Addr().String(),
		totals: map[string]int64{}, windows: map[string][]*spanWindow{}}
	collectortrace.RegisterTraceServiceServer(r.srv, r)
	go func() { _ = r.srv.Serve(lis) }() // returns when stop is called
	return r, nil
}

// stop closes the listener and every connection.
func (r *spanReceiver) stop() { r.srv.Stop() }

// env is the environment that makes a gateway's OTLP exporter send to r
// over plain gRPC, naming itself instance.
func (r *spanReceiver) env(instance string) []string {
	return []string{
		"OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://" + r.addr,
		"OTEL_EXPORTER_OTLP_INSECURE=true",
		"OTEL_RESOURCE_ATTRIBUTES=service.instance.id=" + instance,
	}
}

// Export implements TraceServiceServer: it counts the request's spans and
// keeps nothing of them.
func (r *spanReceiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		inst := instanceID(rs.GetResource())
		ws := r.windows[inst]
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				r.totals[inst]++
				start := int64(sp.GetStartTimeUnixNano())
				for _, w := range ws {
					if start >= w.from && (w.to == 0 || start < w.to) {
						w.spans++
					}
				}
			}
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// instanceID is the service.instance.id attribute of res, or "".
func instanceID(res *resourcepb.Resource) string {
	for _, kv := range res.GetAttributes() {
		if kv.GetKey() == "service.instance.id" {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

// total is the number of spans received from instance so far.
func (r *spanReceiver) total(instance string) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.totals[instance]
}

// open starts counting the spans of instance that start from now on.
func (r *spanReceiver) open(instance string) *spanWindow {
	w := &spanWindow{from: time.Now().UnixNano()}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.windows[instance] = append(r.windows[instance], w)
	return w
}

// close ends w now: spans that start later are not its, while those that
// started in it still count when they arrive.
func (r *spanReceiver) close(w *spanWindow) {
	to := time.Now().UnixNano()
	r.mu.Lock()
	defer r.mu.Unlock()
	w.to = to
}

// count is the number of spans received so far that started in w.
func (r *spanReceiver) count(w *spanWindow) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return w.spans
}

// reportTracing prints the tracing table, the spans each variant exported
// per request and the goal line for 1% sampling, judged at the concurrency
// where it costs most. It returns true when some run failed.
func reportTracing(w io.Writer, o options, results map[caseKey]*sample, spans map[caseKey]int64, took time.Duration) (failed bool) {
	variants := tracingVariants()
	off, one, all := variants[0].label, variants[1].label, variants[2].label
	fmt.Fprintf(w, "\nTracing: etcd Range through storegate (%d intentions, decision cache on), took %v\n", o.intentions[0], took.Round(time.Second))
	fmt.Fprintln(w, "off = exporter none; 1% and 100% = exporter otlp with that sampling ratio of root spans, batch span processor at OTel's defaults,")
	fmt.Fprintln(w, "spans over OTLP/gRPC to a receiver in the bench process (it counts and discards them; its CPU is the bench's, not in hop-CPU)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "tracing\tconc\tops/s\tp50\tp99\tvs-off\thop-CPU/req\tspans/req")
	var errs []string
	// The lowest throughput ratio of 1% to off, and where; r < 0 when a
	// run of either failed.
	worst := struct {
		r    float64
		conc int
		set  bool
	}{}
	for _, conc := range o.concs {
		base := results[caseKey{opRange, conc, off}]
		for _, v := range variants {
			k := caseKey{opRange, conc, v.label}
			s := results[k]
			if s == nil {
				continue
			}
			if !good(s) {
				failed = true
				why := s.err
				if why == nil {
					why = fmt.Errorf("no request completed")
				}
				errs = append(errs, fmt.Sprintf("tracing %s range conc=%d: %v", v.label, conc, why))
				fmt.Fprintf(tw, "%s\t%d\tFAILED\t-\t-\t-\t-\t-\n", v.label, conc)
				continue
			}
			perReq := "-" // no exporter, no spans
			if v.traces.exporter == "otlp" {
				perReq = fmt.Sprintf("%.3f", float64(spans[k])/float64(s.ops))
			}
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\n", v.label, conc, s.throughput(),
				fmtDur(s.quantile(0.50)), fmtDur(s.quantile(0.99)),
				ratio(s.throughput(), ok(base, func(b *sample) float64 { return b.throughput() })),
				cpuPerOp(s, s.hopCPU), perReq)
		}
		r := -1.0
		if s := results[caseKey{opRange, conc, one}]; good(s) && good(base) {
			r = s.throughput() / base.throughput()
		}
		if !worst.set || (worst.r >= 0 && r < worst.r) {
			worst.r, worst.conc, worst.set = r, conc, true
		}
	}
	tw.Flush()
	fmt.Fprintln(w, "vs-off: throughput ratio to tracing off; spans/req: spans received that started in the measured runs / requests")
	fmt.Fprintln(w, exportedLine(o, results, spans, one, all))

	switch {
	case !worst.set:
	case worst.r < 0:
		fmt.Fprintf(w, "goal: 1%% sampling costs under 5%% of throughput: UNKNOWN (a run failed)\n")
	default:
		verdict := "NOT MET"
		if worst.r > 0.95 {
			verdict = "MET"
		}
		fmt.Fprintf(w, "goal: 1%% sampling costs under 5%% of throughput: %s (1%% = %.3f of off at conc=%d)\n", verdict, worst.r, worst.conc)
	}
	if len(errs) > 0 {
		fmt.Fprintf(w, "\nFAILED tracing runs (no numbers are reported for them):\n")
		for _, e := range errs {
			fmt.Fprintf(w, "  %s\n", strings.ReplaceAll(e, "\n", "\n    "))
		}
	}
	return failed
}

// exportedLine sums the spans and requests of the 1% and 100% variants
// over all concurrencies, so that the reader sees what each exported per
// request and that 1% sent about a hundredth of what 100% did.
func exportedLine(o options, results map[caseKey]*sample, spans map[caseKey]int64, one, all string) string {
	perReq := func(label string) (float64, bool) {
		var n, ops int64
		for _, conc := range o.concs {
			k := caseKey{opRange, conc, label}
			if s := results[k]; good(s) {
				n += spans[k]
				ops += int64(s.ops)
			}
		}
		return float64(n) / float64(ops), ops > 0
	}
	a, okA := perReq(all)
	b, okB := perReq(one)
	switch {
	case !okA || !okB:
		return "exported: unknown (a variant has no good run)"
	case b == 0:
		return fmt.Sprintf("exported: %s %.3f spans/request, %s none", all, a, one)
	default:
		return fmt.Sprintf("exported: %s %.3f spans/request, %s %.4f = 1/%.0f of that", all, a, one, b, a/b)
	}
}
