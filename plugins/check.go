package plugins

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/storegate/storegate/gate"
)

// Report is what Check found out about a module.
type Report struct {
	// ABIVersion is what storegate_abi_version returned (0 if it could
	// not be called).
	ABIVersion int
	// Capabilities is what storegate_capabilities returned.
	Capabilities Capabilities
	// Exports lists the module's exports, sorted.
	Exports []string
	// Problems lists every reason the module does not implement ABI
	// version 1; empty when it does.
	Problems []string
}

// OK reports whether the module implements the ABI.
func (r Report) OK() bool { return len(r.Problems) == 0 }

// exportProblems lists what is wrong with a compiled module's exports: a
// required one missing, or one with the wrong signature.
func exportProblems(compiled wazero.CompiledModule) []string {
	var problems []string
	if _, ok := compiled.ExportedMemories()[exportMemory]; !ok {
		problems = append(problems, fmt.Sprintf("missing export %q (memory)", exportMemory))
	}
	funcs := compiled.ExportedFunctions()
	for _, e := range exports {
		def, ok := funcs[e.name]
		switch {
		case !ok && e.required:
			problems = append(problems, fmt.Sprintf("missing export %q %s", e.name, e.sig))
		case ok && !e.sig.matches(def.ParamTypes(), def.ResultTypes()):
			got := signature{def.ParamTypes(), def.ResultTypes()}
			problems = append(problems, fmt.Sprintf("export %q is %s, want %s", e.name, got, e.sig))
		}
	}
	return problems
}

// checkTimeout bounds each call Check makes: it runs once, not on a
// request's path, so it is generous.
const checkTimeout = initTimeout

// Check tells whether wasm implements ABI version 1, for `gateway plugin
// check`: it compiles the module, checks every export and its signature,
// instantiates it under the default limits, checks the ABI version and
// capabilities, runs storegate_init with config (nil: "{}"), and calls
// the hooks once with a sample op (an etcd read of /storegate/check) and
// item, whose results must be well formed. Problems lists everything
// found; the error is only for Check's own failures (ctx ended).
func Check(ctx context.Context, wasm []byte, config []byte) (Report, error) {
	var rep Report
	problem := func(format string, args ...any) { rep.Problems = append(rep.Problems, fmt.Sprintf(format, args...)) }
	if len(config) == 0 {
		config = []byte("{}")
	}
	spec, err := Spec{Name: "check", Path: "check.wasm", Config: config, Timeout: checkTimeout, Instances: 1}.withDefaults()
	if err != nil {
		problem("%v", err)
		return rep, nil
	}
	log := slog.New(slog.DiscardHandler)
	rt, err := newRuntime(ctx, spec.memoryPages(), nil, log)
	if err != nil {
		return rep, err
	}
	defer rt.Close(context.Background())

	compiled, err := rt.CompileModule(ctx, wasm)
	if err != nil {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		problem("not a valid WebAssembly module: %s", firstLine(err.Error()))
		return rep, nil
	}
	for name := range compiled.ExportedFunctions() {
		rep.Exports = append(rep.Exports, name)
	}
	for name := range compiled.ExportedMemories() {
		rep.Exports = append(rep.Exports, name)
	}
	slices.Sort(rep.Exports)
	rep.Problems = exportProblems(compiled)

	// Go on as far as the exports allow, to find every problem.
	funcs := compiled.ExportedFunctions()
	usable := func(name string) bool {
		for _, e := range exports {
			if def, ok := funcs[e.name]; ok && e.name == name {
				return e.sig.matches(def.ParamTypes(), def.ResultTypes())
			}
		}
		return false
	}
	in, err := instantiate(ctx, rt, compiled, moduleConfig(log), spec.MemoryLimit)
	if err != nil {
		return checkFailed(ctx, rep, "instantiation", err)
	}
	defer in.close()

	if usable(exportABIVersion) {
		ver, err := in.version(ctx)
		if err != nil {
			return checkFailed(ctx, rep, exportABIVersion, err)
		}
		rep.ABIVersion = int(ver)
		if ver != ABIVersion {
			problem("%s returned %d, want %d", exportABIVersion, ver, ABIVersion)
		}
	}
	var caps Capabilities
	if usable(exportCapabilities) {
		if caps, err = in.capabilities(ctx); err != nil {
			return checkFailed(ctx, rep, exportCapabilities, err)
		}
		rep.Capabilities = caps
		if err := capsProblem(caps, in.onResponse != nil); err != nil {
			problem("%s", err.(*Failure).Detail)
		}
	}
	if in.mem == nil || !usable(exportAlloc) || !usable(exportInit) {
		return rep, nil // already reported: nothing more can be called
	}
	if err := in.initialize(ctx, config); err != nil {
		return checkFailed(ctx, rep, exportInit, err)
	}

	// One sample call of each hook: a well-formed result is all that is
	// asked (any verdict is fine).
	op := gate.Op{Protocol: gate.ProtocolEtcd, Resource: gate.ResourceKV, Action: gate.ActionRead,
		Keys: gate.KeyRange{Key: []byte("/storegate/check")}}
	caller := "spiffe://storegate.check/caller"
	if usable(exportOnRequest) {
		n := uint32(opEnvelopeSize(caller, &op))
		dst, err := in.buffer(ctx, n, checkTimeout)
		if err != nil {
			return checkFailed(ctx, rep, exportAlloc, err)
		}
		encodeOp(dst, caller, &op)
		if err := checkHook(ctx, in, in.onRequest, n, caps.Mutator(), false); err != nil {
			return checkFailed(ctx, rep, exportOnRequest, err)
		}
	}
	if caps.Responder() && usable(exportOnResponse) {
		key, value := []byte("/storegate/check"), []byte("value")
		n := uint32(itemEnvelopeSize(caller, key, value))
		dst, err := in.buffer(ctx, n, checkTimeout)
		if err != nil {
			return checkFailed(ctx, rep, exportAlloc, err)
		}
		encodeItem(dst, caller, &op, key, value)
		if err := checkHook(ctx, in, in.onResponse, n, true, true); err != nil {
			return checkFailed(ctx, rep, exportOnResponse, err)
		}
	}
	return rep, nil
}

// checkHook calls one hook over the envelope already in the input buffer
// and checks its result as the host would.
func checkHook(ctx context.Context, in *instance, fn api.Function, n uint32, mayMutate, response bool) error {
	res, err := in.invoke(ctx, fn, checkTimeout, in.buf, n)
	if err != nil {
		return err
	}
	r, err := in.result(res)
	if err != nil {
		return err
	}
	if r.verdict != VerdictMutate || !r.mutates() {
		return nil
	}
	switch {
	case !mayMutate:
		return fail(FailABI, "a validator (no capability 1) returned mutate")
	case response && r.hasEnd:
		return fail(FailABI, "a response hook changed a range end")
	case r.hasKey && len(r.key) == 0:
		return fail(FailABI, "mutated key is empty")
	}
	return nil
}

// checkFailed records a call that failed during Check as a problem.
func checkFailed(ctx context.Context, rep Report, export string, err error) (Report, error) {
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}
	var f *Failure
	if errors.As(err, &f) {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%s failed: %s", export, f))
	} else {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%s failed: %v", export, err))
	}
	return rep, nil
}
