// Command encrypt is a storegate mutator plugin with a response hook: it
// encrypts values written under configured key prefixes with AES-256-GCM
// and decrypts them on the way back.
//
// Build: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o encrypt.wasm ./encrypt
package main

import "github.com/storegate/storegate/plugins/sdk"

// init registers the plugin; _initialize runs it before the host calls in.
func init() {
	sdk.Register(sdk.Plugin{Mutates: true, Init: configure, OnRequest: onRequest, OnResponse: onResponse})
}

// main never runs: the module is a WASI reactor.
func main() {}
