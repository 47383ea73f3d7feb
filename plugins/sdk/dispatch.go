package sdk

import "encoding/binary"

// This file runs the hooks over envelopes given as byte slices. It builds
// on every GOOS, so go test can drive the whole path on the host; the wasm
// glue (exports_wasip1.go) only turns pointers into slices and back.
// HandleInit, HandleRequest and HandleResponse are exported for plugin
// tests: they are exactly what the exports run.

// Reasons for denials the SDK itself decides. Constants, so that even
// these paths allocate nothing.
const (
	reasonNoPlugin       = "storegate sdk: no plugin registered (call sdk.Register from an init function)"
	reasonBadEnvelope    = "storegate sdk: malformed envelope: "
	reasonValidatorMut   = "storegate sdk: plugin bug: a validator returned a mutation (register with Mutates: true)"
	reasonResponseEnd    = "storegate sdk: plugin bug: a response hook changed a range end"
	reasonEmptyKey       = "storegate sdk: plugin bug: a mutation set an empty key"
	reasonOutsideBuffers = "storegate sdk: host bug: data outside the buffers storegate_alloc returned"
)

// Per-instance state reused by every call: the decoded op and item and the
// encoded result. The ABI runs one call at a time per instance, so plain
// globals need no lock.
var (
	curOp   Op
	curItem Item
	out     []byte
)

// phase tells finish which hook produced a result, for the checks the ABI
// puts on each.
type phase int

// The hooks whose results finish checks.
const (
	phaseInit phase = iota
	phaseOnRequest
	phaseOnResponse
)

// HandleInit runs the registered plugin's Init over config and returns the
// encoded result (ABI.md, "The result"), or nil for continue (ready). It
// is what storegate_init runs.
func HandleInit(config []byte) []byte {
	scratch = scratch[:0]
	if !registered.ok {
		return finish(Deny(reasonNoPlugin), phaseInit)
	}
	if registered.plugin.Init == nil {
		return nil
	}
	if err := registered.plugin.Init(config); err != nil {
		return finish(Deny(err.Error()), phaseInit)
	}
	return nil
}

// HandleRequest decodes an op envelope into the reused Op, runs the
// registered plugin's OnRequest, checks its result against the ABI and
// returns it encoded, or nil for continue. It is what storegate_on_request
// runs; the returned bytes are reused by the next call.
func HandleRequest(env []byte) []byte {
	scratch = scratch[:0]
	if err := DecodeOp(env, &curOp); err != nil {
		return denyEnvelope(err)
	}
	if registered.plugin.OnRequest == nil {
		return nil
	}
	return finish(registered.plugin.OnRequest(&curOp), phaseOnRequest)
}

// HandleResponse decodes an item envelope into the reused Item, runs the
// registered plugin's OnResponse and returns the result encoded, or nil
// for continue. It is what storegate_on_response runs; the returned bytes
// are reused by the next call.
func HandleResponse(env []byte) []byte {
	scratch = scratch[:0]
	if err := DecodeItem(env, &curItem); err != nil {
		return denyEnvelope(err)
	}
	if registered.plugin.OnResponse == nil {
		return nil
	}
	return finish(registered.plugin.OnResponse(&curItem), phaseOnResponse)
}

// denyEnvelope denies a call whose envelope could not be decoded. It
// builds the reason in scratch rather than concatenating strings, so it
// does not allocate once warm either.
func denyEnvelope(err error) []byte {
	msg := err.Error()
	start := len(scratch)
	scratch = append(scratch, reasonBadEnvelope...)
	scratch = append(scratch, msg...)
	out = appendDeny(out[:0], scratch[start:])
	return out
}

// finish checks r against what the ABI allows in phase and encodes it
// into the reused output buffer; nil means continue (packed result 0). A
// result the host would reject as malformed becomes a denial naming the
// plugin bug, which is clearer to the caller than the host's failure.
func finish(r Result, ph phase) []byte {
	switch r.verdict {
	case VerdictContinue:
		return nil
	case VerdictMutate:
		switch {
		case !r.changed():
			return nil
		case ph == phaseInit:
			return nil // a mutation means nothing to init: ready
		case ph == phaseOnRequest && !registered.plugin.Mutates:
			r = Deny(reasonValidatorMut)
		case ph == phaseOnResponse && r.end.set:
			r = Deny(reasonResponseEnd)
		case r.key.set && r.key.n == 0:
			r = Deny(reasonEmptyKey)
		}
	}
	out = AppendResult(out[:0], r)
	return out
}

// appendDeny appends a denial with reason given as bytes (AppendResult
// takes the reason as a string, which would mean a conversion here).
func appendDeny(dst, reason []byte) []byte {
	start := len(dst)
	dst = AppendResult(dst, Result{verdict: VerdictDeny})
	binary.LittleEndian.PutUint32(dst[start+4:], uint32(len(reason)))
	return append(dst, reason...)
}
