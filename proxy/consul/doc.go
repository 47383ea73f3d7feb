// Package consul is storegate's Consul /v1 HTTP front. Every request is
// matched against a route table, decoded into gate.Ops before anything is
// forwarded, authorized, and then forwarded to the Consul agent with the
// gateway's own ACL token (callers' tokens are stripped). Routes not in the
// table are refused with 403, never passed through.
//
// Consul keys have no leading slash; ops carry them with one ("app/x" is the
// op key "/app/x"), so that one key glob such as "/app/**" governs the same
// key space in etcd and in Consul.
package consul
