// Command schema is a storegate validator plugin: values written under
// configured key prefixes must validate against a JSON Schema.
//
// Build: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o schema.wasm ./schema
package main

import "github.com/storegate/storegate/plugins/sdk"

// init registers the plugin; _initialize runs it before the host calls in.
func init() {
	sdk.Register(sdk.Plugin{Init: configure, OnRequest: onRequest})
}

// main never runs: the module is a WASI reactor.
func main() {}
