// Package soak runs storegate under a long mixed load and checks that the
// gateways do not grow: two gateway replicas behind HAProxy (an etcd and a
// Consul frontend) over a 3-member etcd cluster (the binary) and a Consul
// agent, with the example plugins loaded and a policy of several callers.
//
// The load is paced (a few hundred requests a second in all, on a machine
// of two shared cores): etcd Put/Range/Txn/DeleteRange, watches opened and
// closed, leases granted, kept alive and revoked, locks and elections;
// Consul KV get/put/CAS and blocking queries, sessions created, renewed,
// used for a lock and destroyed; requests that policy denies, and input
// that the gateway or a plugin refuses. Every answer is checked; every
// denial and refusal is checked in the store.
//
// STOREGATE_SOAK is the soak's duration (a Go duration, default 60s);
// `make soak` runs it for 10 minutes.
package soak
