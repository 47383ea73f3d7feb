package plugins

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// initTimeout bounds each call of an instance's start-up (_initialize,
// storegate_init and the first storegate_alloc calls): parsing a
// configuration may take longer than a request's call, but not forever.
// A Go guest's _initialize starts the Go runtime, which under the race
// detector on a loaded 2-core machine took over a second: 5 s keeps a slow
// start from failing a load while still ending a guest that never returns.
const initTimeout = 5 * time.Second

// instance is one instantiated module: the guest's memory and exports,
// the state the host keeps for it, and nothing shared. It serves one call
// at a time (the pool guarantees it), so none of its fields is guarded.
type instance struct {
	mod        api.Module
	mem        api.Memory
	abiVersion api.Function
	caps       api.Function
	alloc      api.Function
	init       api.Function
	onRequest  api.Function
	onResponse api.Function // nil without one

	// stack is the parameter and result stack CallWithStack reuses: two
	// slots hold (ptr, len) in and the packed i64 out, with no allocation.
	stack [2]uint64
	dl    *deadline
	limit uint64 // the memory limit, in bytes

	// buf and bufCap are the guest's input buffer (ABI.md: obtained with
	// storegate_alloc, 64 KiB first, larger when an envelope needs it).
	buf, bufCap uint32

	// broken is set when the instance must not serve another call: a call
	// failed, or its deadline fired. The pool then replaces it.
	broken bool
}

// errCallerDone is returned when the caller's context ended before or
// during a call: not the plugin's failure, but the call did not happen.
type errCallerDone struct{ err error }

// Error says the request ended first, and how.
func (e errCallerDone) Error() string {
	return "the request ended before the plugin answered: " + e.err.Error()
}

// Unwrap returns the context's error.
func (e errCallerDone) Unwrap() error { return e.err }

// instantiate creates an instance of compiled in rt, running the WASI
// reactor's _initialize if the module has one, and looks up its exports
// (missing ones stay nil: callers check exportProblems first).
func instantiate(ctx context.Context, rt wazero.Runtime, compiled wazero.CompiledModule, cfg wazero.ModuleConfig, limit uint64) (*instance, error) {
	ictx, cancel := context.WithTimeout(ctx, initTimeout)
	defer cancel()
	mod, err := rt.InstantiateModule(ictx, compiled, cfg)
	if err != nil {
		if ictx.Err() != nil && ctx.Err() == nil {
			return nil, fail(FailTimeout, "%s did not return within %s", exportInitialize, initTimeout)
		}
		return nil, classify(err, 0, limit)
	}
	in := &instance{
		mod:        mod,
		mem:        mod.ExportedMemory(exportMemory),
		abiVersion: mod.ExportedFunction(exportABIVersion),
		caps:       mod.ExportedFunction(exportCapabilities),
		alloc:      mod.ExportedFunction(exportAlloc),
		init:       mod.ExportedFunction(exportInit),
		onRequest:  mod.ExportedFunction(exportOnRequest),
		onResponse: mod.ExportedFunction(exportOnResponse),
		dl:         newDeadline(),
		limit:      limit,
	}
	return in, nil
}

// close releases the instance; wazero frees its memory.
func (in *instance) close() {
	in.dl.stop()
	_ = in.mod.Close(context.Background())
}

// memSize is the guest's memory size in bytes.
func (in *instance) memSize() uint64 {
	if in.mem == nil { // a module without the memory export (Check only)
		return 0
	}
	return uint64(in.mem.Size())
}

// invoke calls fn(params...) with at most two i32 parameters, under
// ctx and timeout, and returns the first result slot. It allocates
// nothing. Any error marks the instance broken except a caller whose
// context had already ended, for which nothing ran.
func (in *instance) invoke(ctx context.Context, fn api.Function, timeout time.Duration, params ...uint32) (uint64, error) {
	if !in.dl.arm(ctx, timeout) {
		if ctx.Err() != nil {
			return 0, errCallerDone{ctx.Err()}
		}
		if in.dl.fired.Load() { // cannot happen: a fired instance is broken
			in.broken = true
			return 0, fail(FailTimeout, "instance already past its deadline")
		}
		return 0, errCallerDone{context.DeadlineExceeded}
	}
	in.stack = [2]uint64{}
	for i, p := range params {
		in.stack[i] = uint64(p)
	}
	err := fn.CallWithStack(in.dl, in.stack[:])
	expired := in.dl.disarm()
	if expired {
		in.broken = true
	}
	if err != nil {
		in.broken = true
		if expired && in.dl.byParent {
			return 0, errCallerDone{context.DeadlineExceeded}
		}
		if expired {
			return 0, fail(FailTimeout, "still running after %s, interrupted", timeout)
		}
		return 0, classify(err, in.memSize(), in.limit)
	}
	return in.stack[0], nil
}

// version asks the module which ABI it implements.
func (in *instance) version(ctx context.Context) (int32, error) {
	v, err := in.invoke(ctx, in.abiVersion, initTimeout)
	return int32(uint32(v)), err
}

// capabilities asks the module what it does.
func (in *instance) capabilities(ctx context.Context) (Capabilities, error) {
	v, err := in.invoke(ctx, in.caps, initTimeout)
	return Capabilities(uint32(v)), err
}

// allocate asks the guest for n bytes and checks that it answered with a
// buffer inside its memory.
func (in *instance) allocate(ctx context.Context, n uint32, timeout time.Duration) (uint32, error) {
	v, err := in.invoke(ctx, in.alloc, timeout, n)
	if err != nil {
		return 0, err
	}
	ptr := uint32(v)
	if ptr == 0 {
		in.broken = true
		return 0, fail(FailMemory, "%s(%d) returned 0 (out of memory) at %d of %d bytes of memory", exportAlloc, n, in.memSize(), in.limit)
	}
	if uint64(ptr)+uint64(n) > in.memSize() {
		in.broken = true
		return 0, fail(FailABI, "%s(%d) returned %#x, a buffer outside its %d bytes of memory", exportAlloc, n, ptr, in.memSize())
	}
	return ptr, nil
}

// initialize runs storegate_init with config and obtains the input
// buffer. A deny is returned as an ABI failure carrying the reason.
func (in *instance) initialize(ctx context.Context, config []byte) error {
	ptr, err := in.allocate(ctx, uint32(len(config)), initTimeout)
	if err != nil {
		return err
	}
	in.mem.Write(ptr, config)
	packed, err := in.invoke(ctx, in.init, initTimeout, ptr, uint32(len(config)))
	if err != nil {
		return err
	}
	r, err := in.result(packed)
	if err != nil {
		return err
	}
	switch r.verdict {
	case VerdictDeny:
		return fail(FailABI, "%s refused the configuration: %s", exportInit, reasonText(r.reason))
	case VerdictMutate:
		return fail(FailABI, "%s returned mutate", exportInit)
	}
	if in.buf, err = in.allocate(ctx, inputBufferSize, initTimeout); err != nil {
		return err
	}
	in.bufCap = inputBufferSize
	return nil
}

// buffer returns the guest's input buffer as a view of n bytes of its
// memory, asking the guest for a larger buffer first when n does not fit.
// The view stays valid until guest code runs again (which may grow, and so
// move, the memory): the caller encodes into it and then calls.
func (in *instance) buffer(ctx context.Context, n uint32, timeout time.Duration) ([]byte, error) {
	if n > in.bufCap {
		size := max(uint32(1)<<bits.Len32(n-1), inputBufferSize) // next power of two
		size = min(size, maxEnvelope)
		ptr, err := in.allocate(ctx, size, timeout)
		if err != nil {
			return nil, err
		}
		in.buf, in.bufCap = ptr, size
	}
	b, ok := in.mem.Read(in.buf, n)
	if !ok { // the memory cannot shrink, so allocate's check still holds
		in.broken = true
		return nil, fail(FailABI, "input buffer outside memory")
	}
	return b, nil
}

// result decodes a packed result: 0 is continue; otherwise the bytes it
// points at, checked and decoded, still in the guest's memory.
func (in *instance) result(packedResult uint64) (result, error) {
	if packedResult == 0 {
		return result{}, nil
	}
	ptr, n := packed(packedResult)
	b, ok := in.mem.Read(ptr, n)
	if !ok {
		in.broken = true
		return result{}, fail(FailMalformed, "result [%#x, +%d) lies outside the guest's %d bytes of memory", ptr, n, in.memSize())
	}
	r, f := decodeResult(b)
	if f != nil {
		in.broken = true
		return result{}, f
	}
	return r, nil
}

// reasonText turns a deny reason from the guest into a string: a copy of
// at most maxMessage bytes of valid UTF-8. The guest's bytes are cut at
// maxMessage (back to the start of a character the cut would split), and
// each run of invalid bytes is replaced by U+FFFD, three bytes (so one
// invalid byte in two makes the text twice as long): the text is then cut
// again, at a character boundary, if that made it longer.
func reasonText(b []byte) string {
	if len(b) == 0 {
		return "(no reason given)"
	}
	if len(b) > maxMessage {
		b = b[:maxMessage]
		for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
			if utf8.RuneStart(b[i]) {
				if !utf8.FullRune(b[i:]) {
					b = b[:i]
				}
				break
			}
		}
	}
	s := strings.ToValidUTF8(string(b), "\uFFFD")
	if len(s) > maxMessage {
		i := maxMessage
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		s = s[:i]
	}
	return s
}

// setup brings a fresh instance to a ready state: checks the ABI version
// and the capabilities, then runs init. It returns the capabilities.
func (in *instance) setup(ctx context.Context, config []byte) (Capabilities, error) {
	ver, err := in.version(ctx)
	if err != nil {
		return 0, err
	}
	if ver != ABIVersion {
		return 0, fail(FailABI, "%s returned %d; this gateway implements ABI version %d", exportABIVersion, ver, ABIVersion)
	}
	caps, err := in.capabilities(ctx)
	if err != nil {
		return 0, err
	}
	if err := capsProblem(caps, in.onResponse != nil); err != nil {
		return 0, err
	}
	return caps, in.initialize(ctx, config)
}

// capsProblem says what is wrong with a module's capabilities, if anything.
func capsProblem(caps Capabilities, hasOnResponse bool) error {
	if rest := caps &^ knownCaps; rest != 0 {
		return fail(FailABI, "%s returned unknown bits %#x", exportCapabilities, uint32(rest))
	}
	if caps.Responder() && !hasOnResponse {
		return fail(FailABI, "capability 2 (response hook) without a %s export", exportOnResponse)
	}
	return nil
}

// isFailure reports whether err is a plugin failure (not a caller that
// went away).
func isFailure(err error) (*Failure, bool) {
	var f *Failure
	if errors.As(err, &f) {
		return f, true
	}
	return nil, false
}

// loadError names the plugin and its file in an error from loading it.
func loadError(name, path string, err error) error {
	return fmt.Errorf("plugins: plugin %q (%s): %w", name, path, err)
}
