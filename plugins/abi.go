package plugins

import (
	"strconv"
	"strings"

	"github.com/tetratelabs/wazero/api"
)

// ABIVersion is the version of the plugin ABI this host implements
// (ABI.md); a module whose storegate_abi_version returns anything else is
// refused.
const ABIVersion = 1

// The names the ABI gives to the guest's exports and to the host's import
// module.
const (
	exportMemory       = "memory"
	exportABIVersion   = "storegate_abi_version"
	exportCapabilities = "storegate_capabilities"
	exportAlloc        = "storegate_alloc"
	exportInit         = "storegate_init"
	exportOnRequest    = "storegate_on_request"
	exportOnResponse   = "storegate_on_response"
	exportInitialize   = "_initialize" // WASI reactor initialization, when present

	hostModule = "storegate" // the module the host's imports live in
	hostLog    = "log"       // storegate.log(level, ptr, len)
)

// Sizes and limits the ABI fixes.
const (
	envelopeHeader  = 40       // bytes of the op and item envelopes' header
	resultHeader    = 20       // bytes of a hook result's header
	inputBufferSize = 64 << 10 // the input buffer the host asks for first
	maxEnvelope     = 16 << 20 // the largest envelope one call may carry
	maxMessage      = 4 << 10  // log messages and deny reasons are cut here
	unchanged       = 0xFFFFFFFF
	envelopeVersion = 1
)

// Envelope phases (byte 1 of the header).
const (
	phaseRequest  = 1
	phaseResponse = 2
)

// Envelope flags (byte 5 of the header).
const (
	flagValue = 1 << 0 // the op (or item) has a value
	flagRange = 1 << 1 // the key is a range: range_end is set
	flagTxn   = 1 << 2 // the op is part of a transaction
)

// signature is the parameter and result types an export must have.
type signature struct {
	params, results []api.ValueType
}

// String writes the signature as ABI.md does, e.g. "(i32, i32) -> i64".
func (s signature) String() string {
	var b strings.Builder
	b.WriteByte('(')
	for i, p := range s.params {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(api.ValueTypeName(p))
	}
	b.WriteString(") -> ")
	switch len(s.results) {
	case 0:
		b.WriteString("()")
	case 1:
		b.WriteString(api.ValueTypeName(s.results[0]))
	default:
		b.WriteByte('(')
		for i, r := range s.results {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(api.ValueTypeName(r))
		}
		b.WriteByte(')')
	}
	return b.String()
}

// matches reports whether a function definition has exactly this signature.
func (s signature) matches(params, results []api.ValueType) bool {
	return equalTypes(s.params, params) && equalTypes(s.results, results)
}

// equalTypes reports whether two type lists are the same.
func equalTypes(a, b []api.ValueType) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

var (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
)

// export is one function export the ABI names, with its signature and
// whether every module must have it (on_response is required only with
// CapResponse; _initialize only when the toolchain emits it).
type export struct {
	name     string
	sig      signature
	required bool
}

// exports lists the ABI's function exports, in ABI.md's order.
var exports = []export{
	{exportABIVersion, signature{nil, []api.ValueType{i32}}, true},
	{exportCapabilities, signature{nil, []api.ValueType{i32}}, true},
	{exportAlloc, signature{[]api.ValueType{i32}, []api.ValueType{i32}}, true},
	{exportInit, signature{[]api.ValueType{i32, i32}, []api.ValueType{i64}}, true},
	{exportOnRequest, signature{[]api.ValueType{i32, i32}, []api.ValueType{i64}}, true},
	{exportOnResponse, signature{[]api.ValueType{i32, i32}, []api.ValueType{i64}}, false},
	{exportInitialize, signature{nil, nil}, false},
}

// Capabilities is the bit set storegate_capabilities returns.
type Capabilities uint32

// Capability bits.
const (
	// CapMutate: the request hook may rewrite the op (a mutator);
	// without it the plugin is a validator.
	CapMutate Capabilities = 1 << 0
	// CapResponse: the plugin has a response hook.
	CapResponse Capabilities = 1 << 1

	knownCaps = CapMutate | CapResponse
)

// Mutator reports whether the request hook may rewrite ops.
func (c Capabilities) Mutator() bool { return c&CapMutate != 0 }

// Responder reports whether the plugin has a response hook.
func (c Capabilities) Responder() bool { return c&CapResponse != 0 }

// String names the bits, e.g. "mutate|response", "validator" when none.
func (c Capabilities) String() string {
	var parts []string
	if c.Mutator() {
		parts = append(parts, "mutate")
	}
	if c.Responder() {
		parts = append(parts, "response")
	}
	if rest := c &^ knownCaps; rest != 0 {
		parts = append(parts, "0x"+strconv.FormatUint(uint64(rest), 16))
	}
	if len(parts) == 0 {
		return "validator"
	}
	return strings.Join(parts, "|")
}

// Verdict is what a hook decided (byte 0 of its result).
type Verdict uint8

// Verdicts, as the ABI numbers them; VerdictFailed is the host's own, for
// calls that failed (it never crosses the ABI).
const (
	VerdictContinue Verdict = 0
	VerdictDeny     Verdict = 1
	VerdictMutate   Verdict = 2
	VerdictFailed   Verdict = 255
)

// String is the verdict's name, as spans record it.
func (v Verdict) String() string {
	switch v {
	case VerdictContinue:
		return "continue"
	case VerdictDeny:
		return "deny"
	case VerdictMutate:
		return "mutate"
	case VerdictFailed:
		return "failed"
	}
	return "verdict(" + strconv.Itoa(int(v)) + ")"
}

// packed splits a packed result (ptr << 32 | len).
func packed(v uint64) (ptr, n uint32) { return uint32(v >> 32), uint32(v) }
