// Command etcd is the real etcd server v3.7.3 (including `etcd grpc-proxy
// start`), built from the etcd server module for tests and benchmarks: the
// proxy module path go.etcd.io/etcd/v3 is not served by the module proxy, so
// this wrapper calls the server's own entry point.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
