// Package drain holds the end-to-end tests of a gateway's graceful stop:
// two real gateways behind HAProxy over a 3-member etcd and a Consul
// agent, one of them sent SIGTERM while callers use it (see
// drain_test.go). It has no code outside its tests.
package drain
