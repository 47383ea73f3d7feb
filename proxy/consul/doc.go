// Package consul is storegate's Consul /v1 HTTP front. Every request is
// matched against a route table and decoded into a gate.Request — the ops
// the caller asked for, and those the front derives (a session's owner, the
// service a registration's ID names today), looked up only once the asked
// ops are allowed — which the gate authorizes and plugins transform before
// anything is forwarded to the Consul agent with the gateway's own ACL token
// (callers' tokens are stripped). Answers are narrowed to what the caller
// may read. Routes not in the table are refused with 403, never passed
// through. The whole path is Server.handle; its refusals become Consul
// answers in Server.fail.
//
// Consul keys have no leading slash; ops carry them with one ("app/x" is the
// op key "/app/x"), so that one key glob such as "/app/**" governs the same
// key space in etcd and in Consul.
package consul
