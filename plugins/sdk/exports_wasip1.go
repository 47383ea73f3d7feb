//go:build wasip1

package sdk

// The wasm glue: the ABI's exports, which turn pointers into slices of the
// buffers this SDK handed out and results back into packed pointers.
// //go:wasmexport works in any package of a GOOS=wasip1 build, so plugins
// get these exports by importing the SDK.

import "unsafe"

// inputs holds the buffers storegate_alloc handed out: the newest first,
// then the one before it. ABI.md lets the guest reclaim a buffer once a new
// one is asked for; keeping one more is lenient with a host that writes
// the configuration into the first buffer after asking for the second.
// Holding them here keeps the garbage collector from freeing them (it never
// moves memory).
var inputs [2][]byte

// abiVersion is storegate_abi_version: the ABI this guest implements.
//
//go:wasmexport storegate_abi_version
func abiVersion() int32 { return ABIVersion }

// capabilities is storegate_capabilities: mutator and response-hook bits
// derived from the registered plugin.
//
//go:wasmexport storegate_capabilities
func capabilities() int32 { return Capabilities() }

// alloc is storegate_alloc: a fresh buffer of size bytes that stays put
// until the next call to alloc after this one. A negative size gets 0 (out
// of memory); a real out-of-memory traps inside the Go runtime, which the
// host counts as a memory failure.
//
//go:wasmexport storegate_alloc
func alloc(size int32) uint32 {
	if size < 0 {
		return 0
	}
	b := make([]byte, max(size, 1))
	inputs[1], inputs[0] = inputs[0], b
	return addr(b)
}

// initPlugin is storegate_init: runs the plugin's Init over the
// configuration at ptr.
//
//go:wasmexport storegate_init
func initPlugin(ptr, n uint32) uint64 {
	config, ok := view(ptr, n)
	if !ok {
		return pack(finish(Deny(reasonOutsideBuffers), phaseInit))
	}
	return pack(HandleInit(config))
}

// onRequest is storegate_on_request: runs OnRequest over the op envelope
// at ptr.
//
//go:wasmexport storegate_on_request
func onRequest(ptr, n uint32) uint64 {
	env, ok := view(ptr, n)
	if !ok {
		return pack(finish(Deny(reasonOutsideBuffers), phaseOnRequest))
	}
	return pack(HandleRequest(env))
}

// onResponse is storegate_on_response: runs OnResponse over the item
// envelope at ptr. Exported always; the host only calls it when the
// capabilities say there is a response hook.
//
//go:wasmexport storegate_on_response
func onResponse(ptr, n uint32) uint64 {
	env, ok := view(ptr, n)
	if !ok {
		return pack(finish(Deny(reasonOutsideBuffers), phaseOnResponse))
	}
	return pack(HandleResponse(env))
}

// addr is the linear-memory address of b's first byte (GOARCH=wasm
// pointers are addresses in the guest's memory, below 4 GiB).
func addr(b []byte) uint32 { return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b)))) }

// view returns the n bytes at ptr as a slice of the input buffer holding
// them, without unsafe pointer arithmetic; ok is false when they are not
// inside a buffer storegate_alloc handed out.
func view(ptr, n uint32) (b []byte, ok bool) {
	for _, buf := range inputs {
		if len(buf) == 0 {
			continue
		}
		base := addr(buf)
		if ptr >= base && uint64(ptr)+uint64(n) <= uint64(base)+uint64(len(buf)) {
			off := ptr - base
			return buf[off : off+n : off+n], true
		}
	}
	return nil, n == 0 // an empty input may point anywhere
}

// pack makes a packed result, (ptr << 32) | len, of an encoded result; nil
// (continue) packs to 0.
func pack(res []byte) uint64 {
	if len(res) == 0 {
		return 0
	}
	return uint64(addr(res))<<32 | uint64(len(res))
}
