// Command bench measures what storegate costs in front of etcd, side by side
// with the alternatives, in one run: etcd Range and Put at concurrencies 1
// and 32, over 100 keys (every decision cached after the first) and over
// 200,000 distinct preloaded keys (every request the next key, so the
// decision cache is cold), sent directly to etcd, through etcd's own gRPC
// proxy (`etcd grpc-proxy start`, built from the same etcd module) and
// through storegate with a 20-intention policy, as shipped (the compiled
// fast path) and with policy.fast_path false (every decision through OPA),
// all over mutual TLS. It prints a table of throughput, p50/p99 latency and
// the CPU time the hop (proxy or gateway) spends per request, then
// storegate's ratios to the gRPC proxy and to direct with its hop CPU next
// to the proxy's, and the goals: at conc 32, storegate >= 1.2x the proxy's
// throughput over 100 keys and >= 1.0x over distinct keys.
//
// With -watch (the default) it then measures watch fan-out: 1, 100 and
// 1,000 watchers on one prefix over the target's few connections, directly
// on etcd and through storegate, with etcd's own watcher count
// (etcd_debugging_mvcc_watcher_total from its metrics listener) and the
// latency from a put until every watcher has its event, against the goal
// of one etcd watcher and a p99 under 50ms at 1,000 watchers.
//
// With -tracing (the default) it then measures what tracing costs: etcd
// Range through storegate with tracing off (exporter none), and with the
// OTLP exporter sampling 1% and 100% of requests, one gateway process
// each. The spans go over OTLP/gRPC to a trace receiver inside the bench,
// which counts and discards them, so that the table shows the spans each
// variant really exported per request next to its throughput, latency and
// CPU, and a goal line says whether 1% sampling costs under 5% of
// throughput. With -consul (the default) it then measures Consul KV GET and
// PUT directly, over HTTPS with client certificates, and through
// storegate's Consul front, against the goal of >= 0.8x direct-https at
// conc 32. With -plugins (the default) it then measures the example
// WebAssembly plugins of bin/plugins (`make plugins`): an etcd Put through storegate with no
// plugin, with limits and with limits, encrypt and schema; the cost of one
// call of limits (C) and schema (Go) in process, with the real host, in
// time and in host allocations, against the goal of under 3µs and none for
// a 100-byte value; and their guest memory over a million calls. With
// -attack (the default) it last measures an allowed caller's Range latency
// at conc=1 without and during an attack by a caller with no rights (denied
// Puts with 1.5 MB keys, 8 in flight), on a gateway as shipped and on one
// with the refusal throttle out of reach, against the goal of a p99 within
// 2× of the p99 without.
//
// Run it from the repository root after `make tools build`:
//
//	go run ./bench                       # what `make bench` runs (about 10 minutes on 2 cores)
//	go run ./bench -duration 10s -rounds 3
//	go run ./bench -keys 100 -conc 32 -etcd-cpuprofile /tmp/sg.prof   # gateway CPU profiles per run
//	go run ./bench -targets direct,grpc-proxy   # without the gateway
//	go run ./bench -intentions 20,1000  # storegate with both policy sizes
//	go run ./bench -tracing=false -consul=false -plugins=false -attack=false -watch=false  # the etcd table only
//
// The bench makes its own CA and SPIFFE X.509-SVIDs (trust domain
// example.org), starts a one-member etcd, the gRPC proxy and the gateway as
// child processes on free loopback ports with all logs and data in a
// temporary directory (kept with -keep), and stops them when it ends, is
// interrupted or fails. Targets are interleaved per case and per round so
// that drift on a shared machine hits them alike. Each case is 0.5s of
// warm-up and 3s measured, 2 rounds (3 before the key sets doubled the
// etcd table), so that the whole run stays near 10 minutes on 2 cores;
// -nocache adds a storegate with its decision cache off (off by default:
// the distinct keys already show a cold cache).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/storegate/storegate/config"
)

// Target kinds accepted by -targets.
const (
	direct    = "direct"
	grpcProxy = "grpc-proxy"
	storegate = "storegate"
)

// options are the command-line flags.
type options struct {
	duration   time.Duration
	warmup     time.Duration
	rounds     int
	conns      int
	bin        string
	policies   string
	keep       bool
	fsync      bool
	targets    []string
	ops        []opKind
	concs      []int
	intentions []int
	keySets    []keySet
	nocache    bool
	// nofast adds a storegate with the compiled fast path off (every
	// decision through OPA).
	nofast bool
	consul bool
	// tracing adds the tracing table: etcd Range through storegate with
	// tracing off, sampled at 1% and at 100%, spans sent over OTLP/gRPC.
	tracing bool
	// consulProfile, when set, is where the gateway's CPU profile of the
	// Consul storegate runs is written (pprof format).
	consulProfile string
	// etcdProfile, when set, is where the CPU profiles of the first
	// storegate's runs of the etcd table are written.
	etcdProfile string
	// watch adds the watch fan-out table (see watchFanBench).
	watch bool
	// plugins adds the plugins table (see pluginsBench).
	plugins bool
	// attack adds the attack table (see attackBench).
	attack   bool
	gateways []gatewayVariant // derived from intentions and nocache
}

// gatewayVariant is one storegate process under test.
type gatewayVariant struct {
	name       string
	intentions int
	cache      bool // the policy decision cache (the gateway's default)
	// fastPath is the config's policy.fast_path; nil leaves the default
	// (on: decisions the compiled intentions can make skip OPA).
	fastPath *bool
	// consulListen and consulUpstream add the Consul front; consulSocket,
	// when set, is the agent's unix socket the front sends its requests to.
	consulListen, consulUpstream, consulSocket string
	pprof                                      bool // serve /debug/pprof on the admin listener
	// traces, when set, writes the config's telemetry.traces section;
	// nil leaves the gateway's default (no span exporter).
	traces *traceConfig
	// env, when not nil, is the OTEL_* environment of this gateway process
	// only (see startProc); nil: the bench's environment.
	env []string
	// plugins is the config's plugins section; nil loads none.
	plugins []config.PluginConfig
	// limits is the config's limits section.
	limits config.LimitsConfig
}

func main() {
	os.Exit(run())
}

func run() int {
	var (
		o                                          options
		targets, ops, concs, intentionCounts, keys string
	)
	flag.DurationVar(&o.duration, "duration", 3*time.Second, "measured duration of each run")
	flag.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "unmeasured warm-up before each run")
	flag.IntVar(&o.rounds, "rounds", 2, "runs per case; targets are interleaved per round and the rounds merged")
	flag.IntVar(&o.conns, "conns", 4, "client connections per target; worker i uses connection i mod conns")
	flag.StringVar(&o.bin, "bin", "bin", "directory holding the etcd and gateway binaries")
	flag.StringVar(&o.policies, "policies", "policies", "directory of the shipped Rego policy (its *.rego, not _test.rego, are used)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (certificates, configs, logs, etcd data)")
	flag.BoolVar(&o.fsync, "etcd-fsync", false, "let etcd fsync its WAL (off by default: disk noise would swamp the hop's cost)")
	flag.StringVar(&targets, "targets", "direct,grpc-proxy,storegate", "comma-separated targets: direct, grpc-proxy, storegate")
	flag.StringVar(&ops, "ops", "range,put", "comma-separated operations: range, put")
	flag.StringVar(&concs, "conc", "1,32", "comma-separated concurrencies (requests in flight)")
	flag.StringVar(&keys, "keys", "100,distinct", "comma-separated key sets: 100 (every request one of 100 keys) and distinct (every request the next of 200,000 keys, so the decision cache is cold)")
	flag.StringVar(&intentionCounts, "intentions", "20", "comma-separated policy sizes; storegate runs once per size")
	flag.BoolVar(&o.consul, "consul", true, "also benchmark Consul KV GET and PUT, direct vs through storegate (needs bin/consul)")
	flag.StringVar(&o.consulProfile, "consul-cpuprofile", "", "write the gateway's CPU profile over the Consul storegate runs to this file")
	flag.StringVar(&o.etcdProfile, "etcd-cpuprofile", "", "write the first storegate's CPU profile of each of its etcd table runs to this file name, suffixed .OP-KEYS-CONC-rROUND (and .allocs)")
	flag.BoolVar(&o.watch, "watch", true, "also measure watch fan-out: 1, 100 and 1,000 watchers on one prefix, direct and through storegate: etcd's watcher count and put-to-all-delivered latency")
	flag.BoolVar(&o.tracing, "tracing", true, "also measure tracing's cost: etcd Range through storegate with tracing off, sampled at 1% and at 100% (OTLP/gRPC to a receiver in the bench)")
	flag.BoolVar(&o.plugins, "plugins", true, "also measure the example WebAssembly plugins of -bin/plugins (make plugins): etcd Put through storegate with none, one and three, per-call cost in process, guest memory over 1M calls")
	flag.BoolVar(&o.attack, "attack", true, "also measure an allowed caller's Range latency while a caller with no rights sends denied Puts with 1.5 MB keys, with the gateway's refusal throttle at its default and off")
	flag.BoolVar(&o.nofast, "nofast", true, "also run each storegate with policy.fast_path false (every decision through OPA, the decision cache on)")
	flag.BoolVar(&o.nocache, "nocache", false, "also run each storegate with its policy decision cache off (the distinct key set already shows a cold cache)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: go run ./bench [flags]\n\n"+
			"Benchmarks etcd Range and Put over 100 and over 200,000 distinct keys directly, through etcd's gRPC proxy and through storegate (fast path on and off);\n"+
			"then watch fan-out of 1, 100 and 1,000 watchers, direct and through storegate (-watch);\n"+
			"then etcd Range through storegate with tracing off, sampled at 1%% and at 100%% (-tracing);\n"+
			"then Consul KV GET and PUT directly and through storegate (-consul);\n"+
			"then the example WebAssembly plugins: Put through storegate with none, one and three, per-call cost, guest memory (-plugins).\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		return 2
	}
	var err error
	o.targets, err = parseList(targets, func(s string) (string, error) {
		if s != direct && s != grpcProxy && s != storegate {
			return "", fmt.Errorf("unknown target %q (want direct, grpc-proxy or storegate)", s)
		}
		return s, nil
	})
	if err == nil {
		o.ops, err = parseList(ops, func(s string) (opKind, error) {
			if k := opKind(s); k == opRange || k == opPut {
				return k, nil
			}
			return "", fmt.Errorf("unknown op %q (want range or put)", s)
		})
	}
	if err == nil {
		o.concs, err = parseList(concs, positive("concurrency"))
	}
	if err == nil {
		o.intentions, err = parseList(intentionCounts, positive("intention count"))
	}
	if err == nil {
		o.keySets, err = parseList(keys, func(s string) (keySet, error) {
			if k := keySet(s); k == hotKeys || k == distinctKeys {
				return k, nil
			}
			return "", fmt.Errorf("unknown key set %q (want 100 or distinct)", s)
		})
	}
	for _, n := range o.intentions {
		name := storegate
		if len(o.intentions) > 1 {
			name = fmt.Sprintf("%s-%d", storegate, n)
		}
		o.gateways = append(o.gateways, gatewayVariant{name: name, intentions: n, cache: true, pprof: o.etcdProfile != "" && len(o.gateways) == 0})
		if o.nofast {
			o.gateways = append(o.gateways, gatewayVariant{name: name + "-nofast", intentions: n, cache: true, fastPath: new(false)})
		}
		if o.nocache {
			o.gateways = append(o.gateways, gatewayVariant{name: name + "-nocache", intentions: n})
		}
	}
	if err == nil && (o.rounds < 1 || o.conns < 1 || o.duration <= 0 || o.warmup < 0) {
		err = fmt.Errorf("-rounds and -conns must be at least 1, -duration positive, -warmup not negative")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	failed, err := bench(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	if failed {
		return 1
	}
	return 0
}

// bench sets everything up, runs every case and prints the report. failed
// is true when some run had request errors.
func bench(ctx context.Context, o options) (failed bool, err error) {
	// Find the binaries first, so that a missing one fails before any work.
	etcdBin, err := lookBin(o.bin, "etcd", "run `make tools` first")
	if err != nil {
		return false, err
	}
	var gatewayBin string
	if slices.Contains(o.targets, storegate) {
		gatewayBin, err = lookBin(o.bin, "gateway",
			"run `make build` first, or pass -targets direct,grpc-proxy to leave storegate out (no numbers are made up for it)")
		if err != nil {
			return false, err
		}
		if o.policies, err = filepath.Abs(o.policies); err != nil {
			return false, err
		}
		if err := checkPolicies(o.policies); err != nil {
			return false, err
		}
	}
	if o.plugins {
		if err := checkPluginFiles(o.bin); err != nil {
			return false, err
		}
	}

	dir, err := os.MkdirTemp("", "storegate-bench-")
	if err != nil {
		return false, err
	}
	if o.keep {
		fmt.Fprintf(os.Stderr, "bench: keeping %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	// Processes and clients are stopped in reverse order of their start,
	// also when the bench fails or panics on this goroutine; children die
	// with the bench in any case (parent death signal).
	var cleanup []func()
	defer func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}()

	pk, err := newPKI(filepath.Join(dir, "certs"))
	if err != nil {
		return false, fmt.Errorf("certificates: %w", err)
	}
	certs := map[string]svid{}
	for _, name := range []string{"etcd", "grpc-proxy", "gateway", "bench", "consul", "nobody"} {
		if certs[name], err = pk.issue(name); err != nil {
			return false, fmt.Errorf("certificates: %w", err)
		}
	}
	clientTLS, err := pk.clientTLS(certs["bench"])
	if err != nil {
		return false, err
	}
	// etcd's two, the gRPC proxy's, two per gateway, then the Consul
	// bench's, the tracing bench's and the plugins bench's.
	// The last one is etcd's metrics listener (watch fan-out).
	ports, err := freePorts(3 + 2*len(o.gateways) + consulPorts + tracingPorts() + pluginsPorts() + attackPorts() + 1)
	if err != nil {
		return false, err
	}
	consulPortsAt := ports[3+2*len(o.gateways):]
	tracingPortsAt := consulPortsAt[consulPorts:]
	pluginsPortsAt := tracingPortsAt[tracingPorts():]
	attackPortsAt := pluginsPortsAt[pluginsPorts():]
	connect := func(name, endpoint string, hop *proc) (*target, error) {
		t := &target{name: name, endpoint: endpoint, hop: hop}
		cleanup = append(cleanup, t.close)
		return t, t.connect(o.conns, clientTLS)
	}

	// etcd, the upstream of every target. The direct target's clients
	// also check that it is ready and write the key Range reads.
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d", ports[len(ports)-1])
	ec, etcd, err := startEtcd(ctx, etcdBin, filepath.Join(dir, "etcd"), ports[0], ports[1], metricsURL, pk, o.fsync)
	if err != nil {
		return false, err
	}
	cleanup = append(cleanup, ec.Close)
	etcdURL := ec.Endpoints[0]
	dt, err := connect(direct, etcdURL, nil)
	if err != nil {
		return false, err
	}
	if err := etcd.waitReady(ctx, 30*time.Second, probe(dt.clients[0])); err != nil {
		return false, err
	}
	if _, err := dt.clients[0].Put(ctx, rangeKey, value); err != nil {
		return false, fmt.Errorf("seed %s: %w", rangeKey, err)
	}
	// Range of a key that exists, in either key set.
	t0 := time.Now()
	if err := preload(ctx, dt.clients[0], o.keySets); err != nil {
		return false, err
	}
	fmt.Fprintf(os.Stderr, "bench: preloaded the key sets in %v\n", time.Since(t0).Round(time.Millisecond))
	var (
		targets  []*target
		gateways []*target // the storegate targets, in o.gateways' order
	)
	if slices.Contains(o.targets, direct) {
		targets = append(targets, dt)
	}

	if slices.Contains(o.targets, grpcProxy) {
		p, endpoint, err := grpcProxyProc(etcdBin, dir, ports[2], etcdURL, pk, certs["grpc-proxy"])
		if err != nil {
			return false, err
		}
		cleanup = append(cleanup, p.stop)
		t, err := connect(grpcProxy, endpoint, p)
		if err != nil {
			return false, err
		}
		if err := p.waitReady(ctx, 30*time.Second, probe(t.clients[0])); err != nil {
			return false, err
		}
		targets = append(targets, t)
	}

	if slices.Contains(o.targets, storegate) {
		for i, g := range o.gateways {
			p, t, err := startGateway(ctx, gatewayBin, dir, g, o.policies,
				ports[3+2*i], ports[4+2*i], etcdURL, pk, certs["gateway"], o.conns, clientTLS)
			if err != nil {
				return false, err
			}
			cleanup = append(cleanup, p.stop, t.close)
			targets = append(targets, t)
			gateways = append(gateways, t)
		}
	}

	// The runs: every case, round by round, each round visiting the
	// targets back to back; rounds of a case merge into one sample.
	results := map[etcdCase]*sample{}
	pickers := map[etcdCase]*keyPicker{} // conc 0: one per target, op and key set
	wrapped := map[etcdCase]bool{}
	total, done := len(o.ops)*len(o.keySets)*len(o.concs)*o.rounds*len(targets), 0
	start := time.Now()
	for _, op := range o.ops {
		for _, ks := range o.keySets {
			for _, conc := range o.concs {
				for round := range o.rounds {
					// Each round starts at the next target, so that none is
					// always the first after a change of case.
					for i := range targets {
						t := targets[(i+round)%len(targets)]
						if ctx.Err() != nil {
							return false, fmt.Errorf("interrupted")
						}
						done++
						fmt.Fprintf(os.Stderr, "bench: [%d/%d] %s keys=%s conc=%d %s round %d/%d\n",
							done, total, op, ks, conc, t.name, round+1, o.rounds)
						k := etcdCase{op: op, keys: ks, conc: conc, target: t.name}
						pk := etcdCase{op: op, keys: ks, target: t.name}
						if pickers[pk] == nil {
							pickers[pk] = &keyPicker{ks: ks}
						}
						if results[k] == nil {
							results[k] = &sample{}
						}
						var prof func() error
						if o.etcdProfile != "" && len(gateways) > 0 && t == gateways[0] {
							prof = profileDuring(ctx, t.admin, o.warmup+o.duration,
								fmt.Sprintf("%s.%s-%s-%d-r%d", o.etcdProfile, op, ks, conc, round+1))
						}
						results[k].merge(measureKeys(ctx, t, etcd, op, pickers[pk].pick, conc, o.warmup, o.duration))
						if prof != nil {
							if err := prof(); err != nil {
								return false, err
							}
						}
						wrapped[k] = wrapped[k] || pickers[pk].wrapped()
					}
				}
			}
		}
	}
	if ctx.Err() != nil {
		return false, fmt.Errorf("interrupted")
	}
	for _, s := range results {
		slices.Sort(s.lat)
	}
	names := make([]string, len(targets))
	for i, t := range targets {
		names[i] = t.name
	}
	failed = report(os.Stdout, o, names, results, wrapped, time.Since(start))
	if o.watch && len(gateways) > 0 {
		wf, err := watchFanBench(ctx, o, dt, gateways[0], metricsURL)
		if err != nil {
			return true, err
		}
		failed = failed || wf
	}
	if o.tracing && slices.Contains(o.targets, storegate) {
		tf, err := tracingBench(ctx, o, dir, tracingPortsAt, gatewayBin, etcd, etcdURL, pk, certs)
		if err != nil {
			return true, err
		}
		failed = failed || tf
	}
	if o.consul && slices.Contains(o.targets, storegate) {
		consulBin := filepath.Join(o.bin, "consul")
		if _, err := os.Stat(consulBin); err != nil {
			return true, fmt.Errorf("%s not found: run make tools, or pass -consul=false", consulBin)
		}
		cf, err := consulBench(ctx, o, dir, consulPortsAt, consulBin, gatewayBin, etcdURL, pk, certs)
		if err != nil {
			return true, err
		}
		failed = failed || cf
	}
	if o.plugins {
		pf, err := pluginsBench(ctx, o, dir, pluginsPortsAt, gatewayBin, etcdURL, etcd, pk, certs)
		if err != nil {
			return true, err
		}
		failed = failed || pf
	}
	if o.attack && slices.Contains(o.targets, storegate) {
		af, err := attackBench(ctx, o, dir, attackPortsAt, gatewayBin, etcdURL, pk, certs)
		if err != nil {
			return true, err
		}
		failed = failed || af
	}
	return failed, nil
}

// parseList splits a comma-separated flag value and converts each element.
func parseList[T any](s string, conv func(string) (T, error)) ([]T, error) {
	var out []T
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		v, err := conv(f)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty list %q", s)
	}
	return out, nil
}

func positive(what string) func(string) (int, error) {
	return func(s string) (int, error) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return 0, fmt.Errorf("bad %s %q: want a positive integer", what, s)
		}
		return n, nil
	}
}
