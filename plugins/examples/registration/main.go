// Command registration is a storegate validator plugin for Consul service
// and check registrations: service names follow a pattern, Meta.owner
// names the caller, and no check runs a script.
//
// Build: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o registration.wasm ./registration
package main

import "github.com/storegate/storegate/plugins/sdk"

// init registers the plugin; _initialize runs it before the host calls in.
func init() {
	sdk.Register(sdk.Plugin{Init: configure, OnRequest: onRequest})
}

// main never runs: the module is a WASI reactor.
func main() {}
