// Command namespace is a storegate mutator plugin with a response hook:
// each caller works in its own key space, /tenants/<tenant>, where tenant
// is the last path segment of its SPIFFE ID.
//
// Build: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o namespace.wasm ./namespace
package main

import "github.com/storegate/storegate/plugins/sdk"

// init registers the plugin; _initialize runs it before the host calls in.
func init() {
	sdk.Register(sdk.Plugin{Mutates: true, Init: configure, OnRequest: onRequest, OnResponse: onResponse})
}

// main never runs: the module is a WASI reactor.
func main() {}
