package plugins

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/tetratelabs/wazero/sys"
)

// FailureKind classifies a failed plugin call; its String is the kind
// label of storegate_plugin_failures_total.
type FailureKind uint8

// Failure kinds (ABI.md, "Failures").
const (
	// FailTrap: the guest trapped (unreachable, out-of-bounds access,
	// stack overflow...) or exited.
	FailTrap FailureKind = iota + 1
	// FailTimeout: the call ran past its deadline and was interrupted.
	FailTimeout
	// FailMemory: the guest ran out of memory: storegate_alloc returned 0,
	// or it failed while its memory was at its limit.
	FailMemory
	// FailMalformed: the result cannot be decoded (outside memory, lengths
	// that disagree, an unknown verdict, reserved bytes set).
	FailMalformed
	// FailABI: the module does not keep the contract: a missing export or
	// a wrong signature or version (at load), a validator that mutates, a
	// response hook that changes a range end, an empty mutated key, a
	// buffer outside memory.
	FailABI
	// FailBusy: no instance of the plugin's pool came free in time (every
	// one was serving other calls). The plugin never saw the op.
	FailBusy
)

var failureKindNames = [...]string{
	FailTrap: "trap", FailTimeout: "timeout", FailMemory: "memory",
	FailMalformed: "malformed", FailABI: "abi", FailBusy: "busy",
}

// FailureKindNames are every kind's label, for metrics that start each
// plugin's failure series at 0.
func FailureKindNames() []string {
	out := make([]string, 0, len(failureKindNames))
	for _, n := range failureKindNames {
		if n != "" {
			out = append(out, n)
		}
	}
	return out
}

// String is the kind's label: trap, timeout, memory, malformed, abi or
// busy.
func (k FailureKind) String() string {
	if int(k) < len(failureKindNames) && failureKindNames[k] != "" {
		return failureKindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Failure is a failed call into a plugin: what went wrong, and how it is
// counted. The failure policy decides what the op then does, unless the
// failure is one that denies whatever the policy (see failClosed).
type Failure struct {
	Kind   FailureKind
	Detail string

	// closed: the op is denied even under FailAllow. Set for failures an
	// attacker can cause at will to switch a plugin off (a flooded pool)
	// and for a validator that returned a mutation (its author meant to
	// change the op: letting it through unchanged is a mutator that did
	// not run).
	closed bool
}

// Error is "<kind>: <detail>".
func (f *Failure) Error() string { return f.Kind.String() + ": " + f.Detail }

// fail returns a *Failure; detail is formatted as by fmt.Sprintf.
func fail(kind FailureKind, format string, args ...any) *Failure {
	return &Failure{Kind: kind, Detail: fmt.Sprintf(format, args...)}
}

// failClosed is fail for a failure that denies the op whatever the
// plugin's failure policy.
func failClosed(kind FailureKind, format string, args ...any) *Failure {
	f := fail(kind, format, args...)
	f.closed = true
	return f
}

// FailsClosed reports whether the failure denies the op even under
// FailAllow: a pool with no instance free in time (busy), or a validator
// that returned a mutation.
func (f *Failure) FailsClosed() bool { return f.closed }

// nearLimit reports whether a guest memory of size bytes is so close to
// limit that a failure is best explained by a refused memory.grow. WASM
// gives no signal for a refused grow (it returns -1 to the guest, which
// then traps or reports out of memory in its own way), so the host judges
// by the size left: less than an eighth of the limit, or one page.
func nearLimit(size, limit uint64) bool {
	slack := max(limit/8, pageSize)
	return size+slack > limit
}

// pageSize is the size of a WebAssembly memory page.
const pageSize = 64 << 10

// classify turns the error of a guest call into a *Failure. memSize and
// limit tell a trap from a memory exhaustion.
func classify(err error, memSize, limit uint64) *Failure {
	var f *Failure
	if errors.As(err, &f) {
		return f
	}
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		switch exit.ExitCode() {
		case sys.ExitCodeDeadlineExceeded, sys.ExitCodeContextCanceled:
			return fail(FailTimeout, "interrupted at its deadline")
		}
		if nearLimit(memSize, limit) {
			return fail(FailMemory, "exited with code %d at %d of %d bytes of memory", exit.ExitCode(), memSize, limit)
		}
		return fail(FailTrap, "exited with code %d", exit.ExitCode())
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fail(FailTimeout, "interrupted at its deadline")
	}
	msg := firstLine(err.Error())
	if nearLimit(memSize, limit) {
		return fail(FailMemory, "%s at %d of %d bytes of memory", msg, memSize, limit)
	}
	return fail(FailTrap, "%s", msg)
}

// firstLine cuts s at its first newline: wazero appends a wasm stack trace
// to traps, which belongs in a debug log, not in a reason.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
