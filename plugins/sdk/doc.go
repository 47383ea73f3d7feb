// Package sdk is the guest side of the storegate plugin ABI, version 1
// (plugins/ABI.md), for plugins written in Go.
//
// A plugin is a package main built as a WASI reactor:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o schema.wasm ./schema
//
// It has an empty main and registers itself from an init function:
//
//	func init() {
//		sdk.Register(sdk.Plugin{
//			Init:      configure,
//			OnRequest: onRequest,
//		})
//	}
//
//	func main() {}
//
// The SDK owns every export the ABI requires (storegate_abi_version,
// storegate_capabilities, storegate_alloc, storegate_init,
// storegate_on_request, storegate_on_response); the Go toolchain adds
// memory and _initialize, which runs the Go runtime and the init functions.
//
// # Lifetimes
//
// The byte slices of an Op or an Item (Caller, Key, RangeEnd, Value,
// Service) are views into the input buffer the host writes envelopes to:
// they are valid only during the hook call that received them. Copy what
// must outlive the call. The Op and Item themselves are reused from call to
// call. Values given to Result setters are copied at once into an
// SDK-owned buffer, so a plugin may pass its own scratch buffers or views of
// the Op.
//
// # Allocation
//
// The SDK allocates nothing per call once warm: envelopes decode into a
// reused Op or Item, and results encode into a reused output buffer. A
// plugin that keeps its own hooks allocation-free keeps the instance's
// memory flat; one that allocates is bounded by the host's memory limit
// and recycling (ABI.md, "What the host guarantees").
//
// The codec (DecodeOp, DecodeItem, AppendResult and the envelope encoders)
// builds on every GOOS so that plugins and the SDK can be tested on the
// host with go test; only the wasm glue is limited to GOOS=wasip1.
package sdk
