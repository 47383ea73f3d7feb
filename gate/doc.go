// Package gate holds storegate's shared vocabulary — the caller's Identity,
// the protocol-neutral Op (typed Resource and Action), the Decision a policy
// returns — and the Gate that runs every op of a request through
// authorization. The protocol fronts (proxy/etcd, proxy/consul) decode
// requests into Ops and depend only on this package; cmd/gateway wires the
// concrete policy engine in through the Authorizer interface.
package gate
