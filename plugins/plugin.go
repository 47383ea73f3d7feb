package plugins

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/storegate/storegate/gate"
)

// plugin is one configured plugin: its spec, its own wazero runtime (the
// memory limit is a runtime setting, and a runtime per plugin keeps one
// plugin's modules out of another's namespace) and its current version.
type plugin struct {
	host      *Host
	spec      Spec
	match     matcher
	log       *slog.Logger
	rt        wazero.Runtime
	modConfig wazero.ModuleConfig

	current atomic.Pointer[version] // nil once the host is closed

	reloading  sync.Mutex // one reload of this plugin at a time
	failedHash [32]byte   // the last file that failed to load, not retried
}

// newRuntime creates the plugin's runtime: compiled with termination
// checks (so that a deadline interrupts a loop), its memory limit, the
// shared compilation cache, WASI preview 1 and the storegate host module.
func newRuntime(ctx context.Context, pages uint32, cache wazero.CompilationCache, log *slog.Logger) (wazero.Runtime, error) {
	cfg := wazero.NewRuntimeConfig().
		WithCloseOnContextDone(true).
		WithMemoryLimitPages(pages)
	if cache != nil {
		cfg = cfg.WithCompilationCache(cache)
	}
	rt := wazero.NewRuntimeWithConfig(ctx, cfg)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		_ = rt.Close(ctx)
		return nil, fmt.Errorf("plugins: WASI: %w", err)
	}
	_, err := rt.NewHostModuleBuilder(hostModule).
		NewFunctionBuilder().
		WithGoModuleFunction(logFunc(log), []api.ValueType{i32, i32, i32}, nil).
		WithParameterNames("level", "ptr", "len").
		Export(hostLog).
		Instantiate(ctx)
	if err != nil {
		_ = rt.Close(ctx)
		return nil, fmt.Errorf("plugins: host module %q: %w", hostModule, err)
	}
	return rt, nil
}

// moduleConfig is how every instance is set up: anonymous (many instances
// of one module live in one runtime), the WASI reactor's _initialize as
// start function, stdout and stderr to the log, real clocks and crypto
// randomness, and no files, environment or arguments.
func moduleConfig(log *slog.Logger) wazero.ModuleConfig {
	return wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions(exportInitialize).
		WithStdout(logWriter{log: log, level: slog.LevelInfo, stream: "stdout"}).
		WithStderr(logWriter{log: log, level: slog.LevelWarn, stream: "stderr"}).
		WithSysWalltime().
		WithSysNanotime().
		WithRandSource(rand.Reader)
}

// request runs the plugin's request hook over op and applies its verdict.
func (pl *plugin) request(ctx context.Context, caller string, op *gate.Op) error {
	size := opEnvelopeSize(caller, op)
	if size > maxEnvelope {
		return gate.Denied(op, fmt.Sprintf("plugin %s: the op (%d bytes as an envelope) is over the %d-byte envelope limit", pl.spec.Name, size, maxEnvelope))
	}
	ctx, span := pl.host.startSpan(ctx, pl.spec.Name)
	start := time.Now()
	verdict, reason, err := pl.requestCall(ctx, caller, op, uint32(size))
	pl.host.observe(ctx, op.Protocol, time.Since(start))
	if err != nil {
		verdict, reason = VerdictFailed, err.Error()
		err = pl.failed(ctx, op, err)
	}
	endSpan(span, verdict, reason)
	if verdict == VerdictDeny {
		return gate.Denied(op, "plugin "+pl.spec.Name+": "+reason)
	}
	return err
}

// requestCall is one call of the request hook: acquire, encode, call,
// decode, apply, release. The continue path allocates nothing.
func (pl *plugin) requestCall(ctx context.Context, caller string, op *gate.Op, n uint32) (Verdict, string, error) {
	in, v, err := pl.acquire(ctx)
	if err != nil {
		return VerdictFailed, "", err
	}
	defer v.release(in)
	dst, err := in.buffer(ctx, n, pl.spec.Timeout)
	if err != nil {
		return VerdictFailed, "", err
	}
	encodeOp(dst, caller, op)
	res, err := in.invoke(ctx, in.onRequest, pl.spec.Timeout, in.buf, n)
	if err != nil {
		return VerdictFailed, "", err
	}
	r, err := in.result(res)
	if err != nil {
		return VerdictFailed, "", err
	}
	switch {
	case r.verdict == VerdictDeny:
		return VerdictDeny, reasonText(r.reason), nil
	case r.verdict != VerdictMutate || !r.mutates():
		return VerdictContinue, "", nil
	case !v.caps.Mutator():
		// Denied whatever the failure policy: the plugin meant to change
		// the op, and the op unchanged is not what it let through.
		in.broken = true
		return VerdictFailed, "", failClosed(FailABI, "a validator (no capability 1) returned mutate")
	case r.hasKey && len(r.key) == 0:
		in.broken = true
		return VerdictFailed, "", fail(FailABI, "mutated key is empty")
	}
	// Copy what changed out of the guest's memory into new slices: the
	// op outlives this call, and the old slices belong to the caller.
	if r.hasKey {
		op.Keys.Key = slices.Clone(r.key)
	}
	if r.hasEnd {
		op.Keys.End = cloneNonNil(r.end)
	}
	if r.hasValue {
		op.Value = cloneNonNil(r.value)
		op.ValueSize = len(op.Value)
	}
	return VerdictMutate, "", nil
}

// respond runs the plugin's response hook over one item answering op.
func (pl *plugin) respond(ctx context.Context, caller string, op *gate.Op, key, value []byte) ([]byte, []byte, error) {
	size := itemEnvelopeSize(caller, key, value)
	if size > maxEnvelope {
		return nil, nil, gate.Denied(op, fmt.Sprintf("plugin %s: an item of the answer (%d bytes as an envelope) is over the %d-byte envelope limit", pl.spec.Name, size, maxEnvelope))
	}
	ctx, span := pl.host.startSpan(ctx, pl.spec.Name)
	start := time.Now()
	verdict, reason, newKey, newValue, err := pl.responseCall(ctx, caller, op, key, value, uint32(size))
	pl.host.observe(ctx, op.Protocol, time.Since(start))
	if err != nil {
		verdict, reason, newKey, newValue = VerdictFailed, err.Error(), key, value
		err = pl.failed(ctx, op, err)
	}
	endSpan(span, verdict, reason)
	if verdict == VerdictDeny {
		return nil, nil, gate.Denied(op, "plugin "+pl.spec.Name+": "+reason)
	}
	return newKey, newValue, err
}

// responseCall is one call of the response hook; it returns the item to
// send on.
func (pl *plugin) responseCall(ctx context.Context, caller string, op *gate.Op, key, value []byte, n uint32) (Verdict, string, []byte, []byte, error) {
	in, v, err := pl.acquire(ctx)
	if err != nil {
		return VerdictFailed, "", nil, nil, err
	}
	defer v.release(in)
	if in.onResponse == nil { // reloaded into a version without a response hook
		return VerdictContinue, "", key, value, nil
	}
	dst, err := in.buffer(ctx, n, pl.spec.Timeout)
	if err != nil {
		return VerdictFailed, "", nil, nil, err
	}
	encodeItem(dst, caller, op, key, value)
	res, err := in.invoke(ctx, in.onResponse, pl.spec.Timeout, in.buf, n)
	if err != nil {
		return VerdictFailed, "", nil, nil, err
	}
	r, err := in.result(res)
	if err != nil {
		return VerdictFailed, "", nil, nil, err
	}
	switch {
	case r.verdict == VerdictDeny:
		return VerdictDeny, reasonText(r.reason), nil, nil, nil
	case r.verdict != VerdictMutate || !r.mutates():
		return VerdictContinue, "", key, value, nil
	case r.hasEnd:
		in.broken = true
		return VerdictFailed, "", nil, nil, fail(FailABI, "a response hook changed a range end")
	case r.hasKey && len(r.key) == 0:
		in.broken = true
		return VerdictFailed, "", nil, nil, fail(FailABI, "mutated key is empty")
	}
	if r.hasKey {
		key = slices.Clone(r.key)
	}
	if r.hasValue {
		value = cloneNonNil(r.value)
	}
	return VerdictMutate, "", key, value, nil
}

// failed handles a call that did not produce a verdict. A plugin failure
// is counted and logged, and then denies the op or, under FailAllow, lets
// it through unchanged (nil), except a failure that fails closed (no
// instance free in time, a validator that mutated), which denies under
// either policy. A caller that went away, or a closed host, denies: the
// call did not happen.
func (pl *plugin) failed(ctx context.Context, op *gate.Op, err error) error {
	f, ok := isFailure(err)
	if !ok {
		return &gate.Error{Kind: gate.KindDenied, Reason: "plugin " + pl.spec.Name + " did not run", Op: op, Err: err}
	}
	pl.host.countFailure(ctx, pl.spec.Name, f.Kind)
	if f.FailsClosed() {
		pl.log.Warn("plugin failed; the op is denied whatever the failure policy",
			"kind", f.Kind.String(), "detail", f.Detail, "resource", op.Resource, "action", op.Action,
			"failure", pl.spec.Failure.String())
		return gate.Denied(op, "plugin "+pl.spec.Name+" failed: "+f.Error())
	}
	if pl.spec.Failure == FailAllow {
		pl.log.Warn("plugin failed; the op continues unchanged (failure: allow)",
			"kind", f.Kind.String(), "detail", f.Detail, "resource", op.Resource, "action", op.Action)
		return nil
	}
	pl.log.Warn("plugin failed; the op is denied (failure: deny)",
		"kind", f.Kind.String(), "detail", f.Detail, "resource", op.Resource, "action", op.Action)
	return gate.Denied(op, "plugin "+pl.spec.Name+" failed: "+f.Error())
}

// cloneNonNil copies b into a new slice that is not nil even when empty:
// a value rewritten to empty is still a value.
func cloneNonNil(b []byte) []byte {
	return append(make([]byte, 0, len(b)), b...)
}

// startSpan starts the child span "storegate.plugin" when the request's
// span is recording and the host has a tracer; otherwise it returns nil
// and costs nothing.
func (h *Host) startSpan(ctx context.Context, name string) (context.Context, trace.Span) {
	if h.tracer == nil || !trace.SpanFromContext(ctx).IsRecording() {
		return ctx, nil
	}
	return h.tracer.Start(ctx, "storegate.plugin", trace.WithAttributes(attribute.String("storegate.plugin", name)))
}

// endSpan records the verdict (and the reason of a deny or failure) and
// ends span, if there is one.
func endSpan(span trace.Span, verdict Verdict, reason string) {
	if span == nil {
		return
	}
	span.SetAttributes(attribute.String("storegate.plugin.verdict", verdict.String()))
	if reason != "" {
		span.SetAttributes(attribute.String("storegate.reason", reason))
	}
	if verdict == VerdictFailed {
		span.SetStatus(codes.Error, reason)
	}
	span.End()
}
