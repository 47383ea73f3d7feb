package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/storegate/storegate/config"
	"github.com/storegate/storegate/gate"
	"github.com/storegate/storegate/plugins"
)

// The plugins table measures what the example WebAssembly plugins cost:
// per call, in process, with the real host (plugins.New) over the modules
// `make plugins` builds; the guest memory of one instance over a million
// calls; and an etcd Put through the gateway with no plugin, one and three.

// pluginPrefix is the key prefix every plugin of the bench is configured
// on, and under which the plugin Puts write (the bench's intention allows
// /bench/**).
const pluginPrefix = "/bench/plugins/"

// sealedSchemaPrefix is the schema rule's prefix in a gateway that also
// runs encrypt on pluginPrefix. encrypt is a mutator and schema a
// validator, so schema sees the value encrypt sealed, which is not JSON:
// with its rule on pluginPrefix every Put would be denied. Its rule is
// therefore on this prefix, which the measured Puts do not use but the
// check Put does (see checkSealed), while its match still selects every
// Put under pluginPrefix.
const sealedSchemaPrefix = pluginPrefix + "json/"

// pluginCallTarget is the time one measured run of calls aims at; several
// runs make the median.
const (
	pluginCallTarget = 200 * time.Millisecond
	pluginCallRuns   = 5
)

// The memory run: memCalls calls, memory read at the start, after
// memWarmCalls and at the end (and every memSampleEvery calls for the
// peak); when memWarmCalls project the whole past memSlowAfter the rate is
// printed, and the run stops at memMaxTime whatever the count.
const (
	memCalls     = 1_000_000
	memWarmCalls = 100_000
	memSlowAfter = 60 * time.Second
	memMaxTime   = 90 * time.Second
)

// examplePlugin is one example module as the bench configures it.
type examplePlugin struct {
	name string // its name, and its file's in bin/plugins
	lang string // the language of its source: C or Go
}

// The examples the bench uses.
var (
	limitsPlugin  = examplePlugin{name: "limits", lang: "C"}
	schemaPlugin  = examplePlugin{name: "schema", lang: "Go"}
	encryptPlugin = examplePlugin{name: "encrypt", lang: "Go"}
)

// callPlugins are the examples whose per-call cost and memory the table
// shows: the C one, then the Go one.
var callPlugins = []examplePlugin{limitsPlugin, schemaPlugin}

// callSizes are the value sizes of the per-call table; the goal is judged
// at the first.
var callSizes = []int{100, 10 << 10}

// pluginSet is one gateway of the Put comparison: its label and the
// examples it loads, in configuration order.
type pluginSet struct {
	label   string
	plugins []examplePlugin
}

// pluginSets are the gateways the Put comparison runs, the baseline first.
func pluginSets() []pluginSet {
	return []pluginSet{
		{label: "none"},
		{label: "limits", plugins: []examplePlugin{limitsPlugin}},
		{label: "limits+encrypt+schema", plugins: []examplePlugin{limitsPlugin, encryptPlugin, schemaPlugin}},
	}
}

// pluginTimeout is the per-call timeout of the plugins in the gateways of
// the Put comparison, and of the in-process calls: the bench measures what
// calls cost, and with the default 20ms, a wall-clock deadline, one call
// descheduled for that long on a busy machine fails its Put and with it
// the whole run.
const pluginTimeout = time.Second

// pluginsPorts is how many ports the Put comparison takes: an etcd front
// and an admin listener per gateway.
func pluginsPorts() int { return 2 * len(pluginSets()) }

// pluginDir is the directory of the built example modules.
func pluginDir(bin string) (string, error) { return filepath.Abs(filepath.Join(bin, "plugins")) }

// checkPluginFiles fails early when an example module the bench loads is
// missing.
func checkPluginFiles(bin string) error {
	dir, err := pluginDir(bin)
	if err != nil {
		return err
	}
	for _, p := range []examplePlugin{limitsPlugin, schemaPlugin, encryptPlugin} {
		if _, err := os.Stat(filepath.Join(dir, p.name+".wasm")); err != nil {
			return fmt.Errorf("%s.wasm not found in %s: run `make plugins` first, or pass -plugins=false", p.name, dir)
		}
	}
	return nil
}

// schemaRule is the JSON Schema the schema example holds values under
// pluginPrefix to: an object with a string name.
var schemaRule = map[string]any{"type": "object", "required": []string{"name"},
	"properties": map[string]any{"name": map[string]any{"type": "string"}}}

// pluginConfig is the configuration the bench gives example p (what the
// gateway passes to its init): limits as `gateway dev` configures it,
// schema with schemaRule on schemaPrefix, and encrypt with key (32 bytes)
// on pluginPrefix.
func pluginConfig(p examplePlugin, key []byte, schemaPrefix string) map[string]any {
	switch p {
	case limitsPlugin:
		return map[string]any{"max_value_bytes": 512 << 10, "key_charset": "a-zA-Z0-9/_.-"}
	case schemaPlugin:
		return map[string]any{"rules": []any{map[string]any{"prefix": schemaPrefix, "schema": schemaRule}}}
	case encryptPlugin:
		return map[string]any{"key_base64": base64.StdEncoding.EncodeToString(key), "prefixes": []string{pluginPrefix}}
	}
	return map[string]any{}
}

// jsonValue is a JSON object of exactly n bytes (n >= 25) that schemaRule
// accepts: {"name":"bench","pad":"xx…"}.
func jsonValue(n int) []byte {
	const empty = `{"name":"bench","pad":""}`
	return []byte(`{"name":"bench","pad":"` + strings.Repeat("x", max(n-len(empty), 0)) + `"}`)
}

// benchCaller is the caller of the in-process calls, the bench's own
// SPIFFE ID.
var benchCaller = gate.Identity{ID: spiffeid.RequireFromString("spiffe://" + trustDomain + "/bench")}

// putOp is the op an etcd Put of value to key is for the plugins.
func putOp(key string, value []byte) *gate.Op {
	return &gate.Op{Protocol: gate.ProtocolEtcd, Resource: gate.ResourceKV, Action: gate.ActionWrite,
		Method: "/etcdserverpb.KV/Put", Keys: gate.KeyRange{Key: []byte(key)}, Value: value, ValueSize: len(value)}
}

// pluginsBench runs the three parts of the plugins table and prints it:
// the Put comparison through the gateway (when storegate is a target),
// then the in-process per-call cost and the memory run. It returns true
// when some part failed.
func pluginsBench(ctx context.Context, o options, dir string, ports []int, gatewayBin, etcdURL string, etcd *proc, pk *pki, certs map[string]svid) (bool, error) {
	pdir, err := pluginDir(o.bin)
	if err != nil {
		return false, err
	}
	start := time.Now()
	var puts *putComparison
	if slices.Contains(o.targets, storegate) {
		if puts, err = putBench(ctx, o, dir, pdir, ports, gatewayBin, etcdURL, etcd, pk, certs); err != nil {
			return true, err
		}
	}
	cacheDir := filepath.Join(dir, "wazero-cache")
	calls := map[callKey]callStats{}
	for _, p := range callPlugins {
		for _, size := range callSizes {
			if ctx.Err() != nil {
				return true, fmt.Errorf("interrupted")
			}
			fmt.Fprintf(os.Stderr, "bench: plugins: per-call cost of %s, %d-byte value\n", p.name, size)
			calls[callKey{p.name, size}] = callCost(ctx, pdir, cacheDir, p, size)
		}
	}
	mems := map[string]memoryRun{}
	for _, p := range callPlugins {
		if ctx.Err() != nil {
			return true, fmt.Errorf("interrupted")
		}
		fmt.Fprintf(os.Stderr, "bench: plugins: guest memory of %s over %d calls\n", p.name, memCalls)
		mems[p.name] = memoryOverCalls(ctx, pdir, cacheDir, p)
	}
	return reportPlugins(os.Stdout, o, puts, calls, mems, time.Since(start)), nil
}

// ---- part 1: the cost of one call, in process --------------------------

// callKey names one row of the per-call table.
type callKey struct {
	plugin string
	size   int
}

// callStats is the per-call cost of one plugin at one value size.
type callStats struct {
	perCall time.Duration // the median of the runs' time per call
	min     time.Duration // the fastest run's
	calls   int           // per run
	runs    int
	allocs  float64 // Go heap allocations per call in all, through the host
	wazero  float64 // of them, what the bare CallWithStack of the same call makes
	err     error
}

// host is the host's share of the allocations per call: all of them
// less wazero's. Both are the fewest of their runs, and other goroutines
// only ever add to a run, so a difference below zero is that noise in the
// bare runs and counts as none.
func (st callStats) host() float64 { return max(st.allocs-st.wazero, 0) }

// exampleSpec is the spec of example p in process: one instance (so that
// its memory is the memory of every call), pluginTimeout and the bench's
// configuration, with a random key.
func exampleSpec(pdir string, p examplePlugin) plugins.Spec {
	key := make([]byte, 32)
	rand.Read(key)
	cfg, _ := json.Marshal(pluginConfig(p, key, pluginPrefix)) // maps of strings and numbers
	return plugins.Spec{Name: p.name, Path: filepath.Join(pdir, p.name+".wasm"), Config: cfg, Instances: 1, Timeout: pluginTimeout}
}

// newExampleHost starts a host over spec alone, its compiled code shared
// through cacheDir.
func newExampleHost(ctx context.Context, cacheDir string, spec plugins.Spec) (*plugins.Host, error) {
	return plugins.New(ctx, []plugins.Spec{spec}, plugins.Options{CacheDir: cacheDir})
}

// callCost measures the request hook of p over a Put of a size-byte JSON
// value under pluginPrefix, the continue path, on one goroutine: runs of
// N calls (N sized so that a run takes about pluginCallTarget), the time
// per call and the Go heap allocations per call (runtime.MemStats.Mallocs
// around the run). wazero's share of the allocations is measured the way
// plugins/alloc_test.go does, by a bare CallWithStack of the same export
// with the same envelope on an instance of the same module outside the
// host.
func callCost(ctx context.Context, pdir, cacheDir string, p examplePlugin, size int) callStats {
	spec := exampleSpec(pdir, p)
	h, err := newExampleHost(ctx, cacheDir, spec)
	if err != nil {
		return callStats{err: err}
	}
	defer h.Close(context.Background())
	op := putOp(pluginPrefix+"k1", jsonValue(size))
	request := func() error { return h.Request(ctx, benchCaller, op) }
	st := timeCalls(request)
	if st.err != nil {
		return st
	}
	bare, err := newBareGuest(ctx, spec.Path, cacheDir, spec.Config, envelope(benchCaller.String(), op))
	if err != nil {
		st.err = fmt.Errorf("bare CallWithStack: %w", err)
		return st
	}
	defer bare.close()
	b := runCalls(st.calls, st.runs, func() error { return bare.call(ctx) })
	st.wazero, st.err = b.allocs, b.err
	return st
}

// timeCalls sizes the runs of call after a warm-up, then runs them.
func timeCalls(call func() error) callStats {
	const probe = 200
	t0 := time.Now()
	for range probe {
		if err := call(); err != nil {
			return callStats{err: err}
		}
	}
	per := time.Since(t0) / probe
	n := int(pluginCallTarget / max(per, time.Nanosecond))
	return runCalls(min(max(n, 100), 1_000_000), pluginCallRuns, call)
}

// runCalls makes runs runs of n calls: the median and lowest time per
// call, and the fewest allocations per call of any run (other goroutines
// of the bench can only add to a run's count, never take from it).
func runCalls(n, runs int, call func() error) callStats {
	st := callStats{calls: n, runs: runs, allocs: -1}
	per := make([]time.Duration, 0, runs)
	for range runs {
		m0 := mallocs()
		t0 := time.Now()
		for range n {
			if err := call(); err != nil {
				st.err = err
				return st
			}
		}
		el := time.Since(t0)
		a := float64(mallocs()-m0) / float64(n)
		per = append(per, el/time.Duration(n))
		if st.allocs < 0 || a < st.allocs {
			st.allocs = a
		}
	}
	slices.Sort(per)
	st.perCall, st.min = per[len(per)/2], per[0]
	return st
}

// mallocs is the number of heap objects the process has allocated so far.
func mallocs() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.Mallocs
}

// bareGuest is an instance of an example module outside the host, set up
// as the host sets one up (runtime built WithCloseOnContextDone, WASI, the
// storegate.log import, _initialize, alloc and init with the same
// configuration, a 64 KiB input buffer) with one op envelope written into
// its buffer: its call is the host's call without the host.
type bareGuest struct {
	rt        wazero.Runtime
	onRequest api.Function
	stack     []uint64
	buf, n    uint32
}

// newBareGuest instantiates the module at path and prepares env in its
// input buffer.
func newBareGuest(ctx context.Context, path, cacheDir string, config, env []byte) (*bareGuest, error) {
	wasm, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cache, err := wazero.NewCompilationCacheWithDir(cacheDir)
	if err != nil {
		return nil, err
	}
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().
		WithCloseOnContextDone(true).WithMemoryLimitPages(plugins.DefaultMemoryLimit>>16).WithCompilationCache(cache))
	g := &bareGuest{rt: rt, stack: make([]uint64, 2)}
	if err := g.setup(ctx, wasm, config, env); err != nil {
		g.close()
		return nil, err
	}
	return g, nil
}

// setup instantiates the module in g's runtime, initializes it with
// config and writes env into its input buffer; it checks that the hook
// lets env continue, as it does through the host.
func (g *bareGuest) setup(ctx context.Context, wasm, config, env []byte) error {
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, g.rt); err != nil {
		return err
	}
	_, err := g.rt.NewHostModuleBuilder("storegate").NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(func(context.Context, api.Module, []uint64) {}),
			[]api.ValueType{api.ValueTypeI32, api.ValueTypeI32, api.ValueTypeI32}, nil).
		Export("log").Instantiate(ctx)
	if err != nil {
		return err
	}
	mod, err := g.rt.InstantiateWithConfig(ctx, wasm, wazero.NewModuleConfig().WithName("").
		WithStartFunctions("_initialize").WithSysWalltime().WithSysNanotime().WithRandSource(rand.Reader))
	if err != nil {
		return err
	}
	alloc := mod.ExportedFunction("storegate_alloc")
	call := func(fn api.Function, params ...uint64) (uint64, error) {
		r, err := fn.Call(ctx, params...)
		if err != nil || len(r) != 1 {
			return 0, fmt.Errorf("%s: %v", fn.Definition().Name(), err)
		}
		return r[0], nil
	}
	ptr, err := call(alloc, uint64(len(config)))
	if err == nil && !mod.Memory().Write(uint32(ptr), config) {
		err = fmt.Errorf("config buffer outside memory")
	}
	if err == nil {
		_, err = call(mod.ExportedFunction("storegate_init"), ptr, uint64(len(config)))
	}
	var buf uint64
	if err == nil {
		buf, err = call(alloc, 64<<10)
	}
	if err == nil && !mod.Memory().Write(uint32(buf), env) {
		err = fmt.Errorf("input buffer outside memory")
	}
	if err != nil {
		return err
	}
	g.onRequest, g.buf, g.n = mod.ExportedFunction("storegate_on_request"), uint32(buf), uint32(len(env))
	if err := g.call(ctx); err != nil {
		return err
	}
	if res := g.stack[0]; res != 0 {
		if b, ok := mod.Memory().Read(uint32(res>>32), 1); !ok || b[0] != 0 {
			return fmt.Errorf("storegate_on_request did not continue")
		}
	}
	return nil
}

// call runs the request hook over the envelope, as the host does: a
// CallWithStack on a reused two-slot stack.
func (g *bareGuest) call(ctx context.Context) error {
	g.stack[0], g.stack[1] = uint64(g.buf), uint64(g.n)
	return g.onRequest.CallWithStack(ctx, g.stack)
}

// close frees the runtime and its module.
func (g *bareGuest) close() { _ = g.rt.Close(context.Background()) }

// envelope is the op envelope of plugins/ABI.md for op from caller.
func envelope(caller string, op *gate.Op) []byte {
	const header = 40
	b := make([]byte, header, header+len(caller)+len(op.Keys.Key)+len(op.Keys.End)+len(op.Value))
	b[0], b[1], b[2], b[3], b[4] = 1, 1, byte(op.Protocol), byte(op.Resource), byte(op.Action)
	if op.Value != nil {
		b[5] |= 1
	}
	if len(op.Keys.End) > 0 {
		b[5] |= 2
	}
	le := binary.LittleEndian
	le.PutUint64(b[8:], uint64(op.Lease))
	for i, n := range []int{len(caller), len(op.Keys.Key), len(op.Keys.End), len(op.Value), 0} {
		le.PutUint32(b[16+4*i:], uint32(n))
	}
	b = append(b, caller...)
	b = append(b, op.Keys.Key...)
	b = append(b, op.Keys.End...)
	return append(b, op.Value...)
}

// ---- part 2: guest memory over a million calls -------------------------

// memoryRun is the guest memory of one instance of a plugin over a long
// run of calls.
type memoryRun struct {
	start, warm, end uint64        // bytes: before the first call, after memWarmCalls, at the end
	peak             uint64        // the most of any reading
	drops            int           // readings below the one before: the instance was replaced
	calls            int           // calls made
	took             time.Duration // for all of them
	warmTook         time.Duration // for the first memWarmCalls
	err              error
}

// memSampleEvery is how often, in calls, the memory run also reads the
// memory, for its peak and to see a replaced instance.
const memSampleEvery = 10_000

// memoryOverCalls makes memCalls request calls of p (100-byte JSON value,
// continue path) on a fresh host with one instance, reading the instance's
// memory before the first call, every memSampleEvery calls (memWarmCalls
// among them) and after the last. When memMaxTime passes first, it stops
// there.
func memoryOverCalls(ctx context.Context, pdir, cacheDir string, p examplePlugin) memoryRun {
	h, err := newExampleHost(ctx, cacheDir, exampleSpec(pdir, p))
	if err != nil {
		return memoryRun{err: err}
	}
	defer h.Close(context.Background())
	op := putOp(pluginPrefix+"k1", jsonValue(100))
	var r memoryRun
	last := uint64(0)
	read := func() uint64 {
		n, err := readMemory(h, p.name)
		if err != nil && r.err == nil {
			r.err = err
		}
		if n < last {
			r.drops++
		}
		last, r.peak = n, max(r.peak, n)
		return n
	}
	r.start = read()
	t0 := time.Now()
	deadline := t0.Add(memMaxTime)
	for r.calls < memCalls && r.err == nil {
		if r.calls%1000 == 0 && (ctx.Err() != nil || time.Now().After(deadline)) {
			break
		}
		if err := h.Request(ctx, benchCaller, op); err != nil {
			r.err = fmt.Errorf("call %d: %w", r.calls+1, err)
			break
		}
		r.calls++
		switch {
		case r.calls == memWarmCalls:
			r.warmTook = time.Since(t0)
			r.warm = read()
		case r.calls%memSampleEvery == 0:
			read()
		}
	}
	r.took = time.Since(t0)
	r.end = read()
	if r.err == nil && ctx.Err() != nil {
		r.err = fmt.Errorf("interrupted")
	}
	return r
}

// readMemory reads the memory of plugin's instance, waiting up to a
// second for it to be free: after the host replaced it (memory past half
// the limit) the new one is instantiated in the background.
func readMemory(h *plugins.Host, plugin string) (uint64, error) {
	for wait := time.Now().Add(time.Second); ; {
		if n, ok := h.MemoryBytes(plugin); ok {
			return n, nil
		}
		if time.Now().After(wait) {
			return 0, fmt.Errorf("no free instance of %s to read the memory of", plugin)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ---- part 3: etcd Put through the gateway with plugins -----------------

// putComparison is what the Put comparison measured.
type putComparison struct {
	results map[caseKey]*sample // by conc and plugin set's label
	took    time.Duration
	sealed  string // what the three-plugin gateway's check Put left in etcd
	// logs are the gateways' log files, by plugin set's label: the etcd
	// front denies a failed plugin call without saying why, the log does.
	logs map[string]string
}

// pluginGateway is a running gateway of the Put comparison.
type pluginGateway struct {
	set pluginSet
	p   *proc
	t   *target
}

// putBench starts one gateway per plugin set and measures a Put of a
// 100-byte JSON value to pluginPrefix+k<i mod 1000> through each, at each
// of -conc, rounds interleaved as in the etcd table.
func putBench(ctx context.Context, o options, dir, pdir string, ports []int, gatewayBin, etcdURL string, etcd *proc, pk *pki, certs map[string]svid) (*putComparison, error) {
	clientTLS, err := pk.clientTLS(certs["bench"])
	if err != nil {
		return nil, err
	}
	key := make([]byte, 32)
	rand.Read(key)
	var gws []*pluginGateway
	defer func() { stopPluginGateways(gws) }()
	for i, set := range pluginSets() {
		g := gatewayVariant{name: storegate + "-plugins-" + strings.ReplaceAll(set.label, "+", "-"),
			intentions: o.intentions[0], cache: true, plugins: pluginsConfig(pdir, set.plugins, key)}
		p, t, err := startGateway(ctx, gatewayBin, dir, g, o.policies, ports[2*i], ports[2*i+1], etcdURL, pk, certs["gateway"], o.conns, clientTLS)
		if err != nil {
			return nil, err
		}
		gws = append(gws, &pluginGateway{set: set, p: p, t: t})
	}
	pc := &putComparison{results: map[caseKey]*sample{}, logs: map[string]string{}}
	for _, gw := range gws {
		pc.logs[gw.set.label] = gw.p.LogFile
	}
	if pc.sealed, err = checkSealed(ctx, gws[len(gws)-1], etcdURL, clientTLS); err != nil {
		return nil, err
	}
	total, done := len(o.concs)*o.rounds*len(gws), 0
	start := time.Now()
	for _, conc := range o.concs {
		for round := range o.rounds {
			for i := range gws {
				gw := gws[(i+round)%len(gws)]
				if ctx.Err() != nil {
					return nil, fmt.Errorf("interrupted")
				}
				done++
				fmt.Fprintf(os.Stderr, "bench: plugins [%d/%d] put conc=%d %s round %d/%d\n",
					done, total, conc, gw.set.label, round+1, o.rounds)
				k := caseKey{op: opPut, conc: conc, target: gw.set.label}
				if pc.results[k] == nil {
					pc.results[k] = &sample{}
				}
				pc.results[k].merge(measurePut(ctx, gw.t, etcd, conc, o.warmup, o.duration))
			}
		}
	}
	pc.took = time.Since(start)
	sortLatencies(pc.results)
	return pc, nil
}

// pluginsConfig is the gateway config's plugins section for the examples
// ps, files in pdir: limits on every KV write, encrypt on KV ops under
// pluginPrefix, schema on KV writes under it (its rule on
// sealedSchemaPrefix when encrypt runs too). nil when ps is empty.
func pluginsConfig(pdir string, ps []examplePlugin, key []byte) []config.PluginConfig {
	glob := []string{pluginPrefix + "**"}
	schemaPrefix := pluginPrefix
	if slices.Contains(ps, encryptPlugin) {
		schemaPrefix = sealedSchemaPrefix
	}
	var out []config.PluginConfig
	for _, p := range ps {
		match := config.PluginMatch{Resources: []string{"kv"}, Actions: []string{"write"}}
		switch p {
		case encryptPlugin:
			match = config.PluginMatch{Resources: []string{"kv", "watch"}, Keys: glob}
		case schemaPlugin:
			match.Keys = glob
		}
		out = append(out, config.PluginConfig{Name: p.name, Path: filepath.Join(pdir, p.name+".wasm"),
			Match: match, Config: pluginConfig(p, key, schemaPrefix), Timeout: config.Duration(pluginTimeout)})
	}
	return out
}

// checkSealed checks the three-plugin gateway gw before it is measured
// and says what it found: a Put of a JSON value as the measured Puts make
// passes, etcd holds it sealed (encrypt's 29 bytes of overhead) and the
// gateway reads it back as put; and the same Put under schema's rule is
// denied, by schema, which sees the sealed value (the etcd front sends
// the denial without its reason, but policy allows /bench/** and limits
// passed the same value just before).
func checkSealed(ctx context.Context, gw *pluginGateway, etcdURL string, clientTLS *tls.Config) (string, error) {
	sealed, err := checkRoundTrip(ctx, gw, etcdURL, clientTLS)
	if err != nil {
		return "", err
	}
	k := sealedSchemaPrefix + "check"
	_, err = gw.t.clients[0].Put(ctx, k, string(jsonValue(100)))
	if err == nil || !strings.Contains(err.Error(), "permission denied") {
		return "", gw.p.failure(fmt.Errorf("a Put of a JSON value to %s (schema's rule) was not denied: %v", k, err))
	}
	return sealed + fmt.Sprintf("; a JSON Put to %s is denied by schema, which sees it sealed", k), nil
}

// checkRoundTrip puts a JSON value through gw, reads it back through gw
// and directly from etcd, and says how etcd holds it.
func checkRoundTrip(ctx context.Context, gw *pluginGateway, etcdURL string, clientTLS *tls.Config) (string, error) {
	k, v := pluginPrefix+"check", string(jsonValue(100))
	c := gw.t.clients[0]
	if _, err := c.Put(ctx, k, v); err != nil {
		return "", gw.p.failure(fmt.Errorf("a Put of a valid JSON value to %s through it failed: %w", k, err))
	}
	got, err := c.Get(ctx, k)
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != v {
		return "", gw.p.failure(fmt.Errorf("reading %s back through it did not give the value put (err %v)", k, err))
	}
	d := &target{name: direct, endpoint: etcdURL}
	defer d.close()
	if err := d.connect(1, clientTLS); err != nil {
		return "", err
	}
	raw, err := d.clients[0].Get(ctx, k)
	if err != nil || len(raw.Kvs) != 1 {
		return "", fmt.Errorf("reading %s directly from etcd: %v", k, err)
	}
	stored := raw.Kvs[0].Value
	if len(stored) != len(v)+29 || stored[0] != 1 || bytes.Contains(stored, []byte(`"name"`)) {
		return "", fmt.Errorf("%s: etcd holds %d bytes %q, not the value sealed by encrypt", k, len(stored), stored)
	}
	return fmt.Sprintf("a %d-byte JSON Put under %s passes; etcd holds %d sealed bytes (version %d); the gateway reads back the value put",
		len(v), pluginPrefix, len(stored), stored[0]), nil
}

// measurePut is measure for the plugin Puts: a warm-up, then the measured
// run with the CPU time of the gateway and of etcd read around it.
func measurePut(ctx context.Context, t *target, etcd *proc, conc int, warmup, d time.Duration) sample {
	if gone, err := t.hop.Exited(); gone {
		return sample{errs: 1, err: t.hop.failure(fmt.Errorf("exited: %v", err))}
	}
	if warmup > 0 {
		if w := putJSON(ctx, t, conc, warmup); w.errs > 0 {
			return w
		}
	}
	hop0, errH := t.hop.cpuTime()
	etcd0, errE := etcd.cpuTime()
	s := putJSON(ctx, t, conc, d)
	hop1, errH1 := t.hop.cpuTime()
	etcd1, errE1 := etcd.cpuTime()
	s.cpuErr = firstErr(errH, errE, errH1, errE1)
	s.hopCPU, s.etcdCPU = hop1-hop0, etcd1-etcd0
	return s
}

// putJSON puts a 100-byte JSON value to pluginPrefix+k<i mod putKeys>
// through t with conc workers for d.
func putJSON(ctx context.Context, t *target, conc int, d time.Duration) sample {
	v := string(jsonValue(100))
	return closedLoop(ctx, conc, d, func(ctx context.Context, w, i int) error {
		_, err := t.clients[w%len(t.clients)].Put(ctx, fmt.Sprintf("%sk%d", pluginPrefix, i%putKeys), v)
		return err
	})
}

// stopPluginGateways closes the clients of each gateway, then stops it.
func stopPluginGateways(gws []*pluginGateway) {
	for _, gw := range gws {
		gw.t.close()
		gw.p.stop()
	}
}

// ---- the report ---------------------------------------------------------

// reportPlugins prints the plugins table: the Put comparison, the
// per-call cost with its goal lines and the memory runs. It returns true
// when something failed.
func reportPlugins(w io.Writer, o options, puts *putComparison, calls map[callKey]callStats, mems map[string]memoryRun, took time.Duration) (failed bool) {
	fmt.Fprintf(w, "\nPlugins: the example WebAssembly plugins (bin/plugins, wazero %s), took %v\n", wazeroVersion(), took.Round(time.Second))
	if puts != nil {
		failed = reportPuts(w, o, puts) || failed
	} else {
		fmt.Fprintln(w, "etcd Put through storegate with plugins: not run (storegate is not among -targets)")
	}
	failed = reportCalls(w, calls) || failed
	return reportMemory(w, mems) || failed
}

// reportPuts prints the Put comparison.
func reportPuts(w io.Writer, o options, pc *putComparison) (failed bool) {
	sets := pluginSets()
	fmt.Fprintf(w, "\netcd Put through storegate (%d intentions, decision cache on) with no plugin, limits, and limits+encrypt+schema, took %v\n",
		o.intentions[0], pc.took.Round(time.Second))
	fmt.Fprintf(w, "put = 100-byte JSON value over %d keys under %s; limits on every KV write; encrypt and schema on %s** (see below);\n",
		putKeys, pluginPrefix, pluginPrefix)
	fmt.Fprintf(w, "plugins: instances = the gateway's GOMAXPROCS (the default; %d CPUs here), failure deny, timeout %v (not the default 20ms, a wall-clock\n",
		runtime.NumCPU(), pluginTimeout)
	fmt.Fprintf(w, "deadline that a call descheduled on a busy machine misses: the Put is denied and the run spoiled); %v warm-up + %v measured x %d round(s)\n",
		o.warmup, o.duration, o.rounds)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "plugins\tconc\tops/s\tp50\tp99\tvs-none\tp50-vs-none\thop-CPU/req\thop-CPU-vs-none")
	var errs []string
	for _, conc := range o.concs {
		base := pc.results[caseKey{opPut, conc, sets[0].label}]
		for _, set := range sets {
			s := pc.results[caseKey{opPut, conc, set.label}]
			if !good(s) {
				failed = true
				errs = append(errs, fmt.Sprintf("plugins %s put conc=%d: %v%s", set.label, conc, sampleErr(s), lastPluginFailure(pc.logs[set.label])))
				fmt.Fprintf(tw, "%s\t%d\tFAILED\t-\t-\t-\t-\t-\t-\n", set.label, conc)
				continue
			}
			cpuVs := "?"
			if good(base) && s.cpuErr == nil && base.cpuErr == nil {
				cpuVs = ratio(float64(s.perOp(s.hopCPU)), float64(base.perOp(base.hopCPU)))
			}
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\n", set.label, conc, s.throughput(),
				fmtDur(s.quantile(0.50)), fmtDur(s.quantile(0.99)),
				ratio(s.throughput(), ok(base, func(b *sample) float64 { return b.throughput() })),
				ratio(float64(s.quantile(0.50)), ok(base, func(b *sample) float64 { return float64(b.quantile(0.50)) })),
				cpuPerOp(s, s.hopCPU), cpuVs)
		}
	}
	tw.Flush()
	fmt.Fprintln(w, "vs-none: throughput ratio to the gateway without plugins; p50-vs-none and hop-CPU-vs-none: the same for the median latency and the gateway's CPU per request")
	fmt.Fprintln(w, "limits+encrypt+schema: encrypt (a mutator) runs before schema (a validator), so schema sees the sealed value, not JSON;")
	fmt.Fprintf(w, "  its rule is therefore on %s, which the measured Puts do not use: schema is called on every Put (match %s**)\n", sealedSchemaPrefix, pluginPrefix)
	fmt.Fprintln(w, "  but validates nothing there; what a validation costs is in the per-call table below. encrypt seals every Put.")
	fmt.Fprintf(w, "check: %s\n", pc.sealed)
	if len(errs) > 0 {
		fmt.Fprintf(w, "\nFAILED plugin runs (no numbers are reported for them):\n")
		for _, e := range errs {
			fmt.Fprintf(w, "  %s\n", strings.ReplaceAll(e, "\n", "\n    "))
		}
	}
	return failed
}

// lastPluginFailure is the last plugin failure the gateway logged to
// logFile, as a line to add to a failed run's error, or "".
func lastPluginFailure(logFile string) string {
	b, err := os.ReadFile(logFile)
	if err != nil {
		return ""
	}
	lines := strings.Split(string(b), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], "plugin failed") {
			return "\nthe gateway's last plugin failure: " + lines[i]
		}
	}
	return ""
}

// sampleErr is why s is not a good sample.
func sampleErr(s *sample) error {
	if s == nil || s.err == nil {
		return fmt.Errorf("no request completed")
	}
	return s.err
}

// reportCalls prints the per-call table and a goal line per plugin.
func reportCalls(w io.Writer, calls map[callKey]callStats) (failed bool) {
	fmt.Fprintln(w, "\nPer call, in process: plugins.Host.Request, the request hook's continue path (an etcd Put of a valid JSON value")
	fmt.Fprintf(w, "under %s), one instance, timeout %v, one goroutine; time = median (and fastest) of %d runs of N calls;\n", pluginPrefix, pluginTimeout, pluginCallRuns)
	fmt.Fprintln(w, "allocs = Go heap allocations per call (runtime.MemStats.Mallocs, fewest of the runs); wazero = those of a bare")
	fmt.Fprintln(w, "CallWithStack of the same export on the same envelope outside the host (the runtime is built WithCloseOnContextDone);")
	fmt.Fprintln(w, "host = allocs/call - wazero")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "plugin\tlang\tvalue\tN\tns/call\tfastest\tallocs/call\twazero\thost")
	for _, p := range callPlugins {
		for _, size := range callSizes {
			st := calls[callKey{p.name, size}]
			if st.err != nil {
				failed = true
				fmt.Fprintf(tw, "%s\t%s\t%s\t-\tFAILED: %s\t-\t-\t-\t-\n", p.name, p.lang, fmtBytes(size), firstLineOf(st.err))
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%.2f\t%.2f\t%.2f\n", p.name, p.lang, fmtBytes(size), st.calls,
				st.perCall.Nanoseconds(), st.min.Nanoseconds(), st.allocs, st.wazero, st.host())
		}
	}
	tw.Flush()
	for _, p := range callPlugins {
		fmt.Fprintln(w, callGoal(p, calls[callKey{p.name, callSizes[0]}]))
	}
	return failed
}

// callGoal is the goal line of p at the first size: under 3µs and no host
// allocation per call.
func callGoal(p examplePlugin, st callStats) string {
	const goal = "goal: under 3 µs and zero host allocations per call for 100 B"
	if st.err != nil {
		return fmt.Sprintf("%s: UNKNOWN for %s (%s; the run failed)", goal, p.name, p.lang)
	}
	host := st.host()
	verdict := "NOT MET"
	// Allocations by other goroutines of the bench can add a fraction of
	// one per call over a run; a host that allocates allocates at least one.
	if st.perCall < 3*time.Microsecond && host < 0.5 {
		verdict = "MET"
	}
	return fmt.Sprintf("%s: %s for %s (%s): %s per call, %.2f host allocations per call (%.2f in all, %.2f in wazero)",
		goal, verdict, p.name, p.lang, fmtDur(st.perCall), host, st.allocs, st.wazero)
}

// reportMemory prints the guest memory of each plugin's instance over its
// long run, and whether it stayed flat after the warm-up.
func reportMemory(w io.Writer, mems map[string]memoryRun) (failed bool) {
	fmt.Fprintf(w, "\nGuest memory over %s calls (100-byte JSON value, continue path, one instance, plugins.Host.MemoryBytes, read every %dk\n",
		callCount(memCalls), memSampleEvery/1000)
	fmt.Fprintln(w, "calls for the peak); the host replaces an instance whose memory passes half its limit (16 MiB of the default 32 MiB)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "plugin\tlang\tstart\tafter %s\tat end\tpeak\tcalls\tcalls/s\treplaced\tflat\n", callCount(memWarmCalls))
	var notes []string
	for _, p := range callPlugins {
		r := mems[p.name]
		if r.err != nil {
			failed = true
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t%d\tFAILED: %s\t-\t-\n", p.name, p.lang, r.calls, firstLineOf(r.err))
			continue
		}
		rate := float64(r.calls) / r.took.Seconds()
		flat := "no"
		if r.end == r.warm && r.drops == 0 && r.calls > memWarmCalls {
			flat = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%.0f\t%d\t%s\n", p.name, p.lang, r.start, r.warm, r.end, r.peak,
			r.calls, rate, r.drops, flat)
		notes = append(notes, memoryNote(p, r)...)
	}
	tw.Flush()
	fmt.Fprintf(w, "memory in bytes; replaced: readings below the one before; flat: the same at the end as after %s calls, none replaced\n",
		callCount(memWarmCalls))
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
	return failed
}

// memoryNote says when a run was slow (its first calls projected past
// memSlowAfter) or cut at memMaxTime.
func memoryNote(p examplePlugin, r memoryRun) []string {
	var out []string
	if r.warmTook > 0 {
		if proj := r.warmTook * memCalls / memWarmCalls; proj > memSlowAfter {
			out = append(out, fmt.Sprintf("%s: %d calls took %v (%.0f calls/s): %s projected to %v",
				p.name, memWarmCalls, r.warmTook.Round(time.Millisecond),
				memWarmCalls/r.warmTook.Seconds(), callCount(memCalls), proj.Round(time.Second)))
		}
	}
	if r.calls < memCalls {
		out = append(out, fmt.Sprintf("%s: stopped after %d of %d calls at the %v bound (took %v)",
			p.name, r.calls, memCalls, memMaxTime, r.took.Round(time.Second)))
	}
	return out
}

// callCount writes a count of calls as 100k or 1M.
func callCount(n int) string {
	if n%1_000_000 == 0 {
		return fmt.Sprintf("%dM", n/1_000_000)
	}
	return fmt.Sprintf("%dk", n/1000)
}

// fmtBytes writes a value size as 100 B or 10 KB.
func fmtBytes(n int) string {
	if n >= 1<<10 && n%(1<<10) == 0 {
		return fmt.Sprintf("%d KB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// firstLineOf is the first line of err's message.
func firstLineOf(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// wazeroVersion is the wazero module the bench (and so the host) is
// built with.
func wazeroVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/tetratelabs/wazero" {
				return d.Version
			}
		}
	}
	return "(version unknown)"
}
