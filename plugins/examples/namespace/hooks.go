package main

import "github.com/storegate/storegate/plugins/sdk"

// Reasons for denials; constants where they can be.
const (
	reasonOutside  = "key outside the caller's namespace"
	reasonSlash    = `namespace: a key must start with "/" (the caller's key space is /...)`
	reasonNoTenant = "namespace: the caller's SPIFFE ID has no path segment to name its tenant: "
	reasonUnmapped = "namespace: locks and elections are not namespaced (their keys come back unmapped): "
)

// onRequest moves the op's key and range end into the caller's key space.
// KV and watch ops are mapped; lock and election ops are denied, since
// their answers carry keys the response hook never sees (ABI.md lists no
// response items for them) and a tenant could otherwise create keys
// anywhere; every other op (leases, services, ...) continues.
func onRequest(op *sdk.Op) sdk.Result {
	switch op.Resource {
	case sdk.ResourceKV, sdk.ResourceWatch:
	case sdk.ResourceLock, sdk.ResourceElection:
		return sdk.Deny(reasonUnmapped + op.Resource.String())
	default:
		return sdk.Continue()
	}
	p, ok := tenantPrefix(op.Caller)
	if !ok {
		return sdk.Deny(reasonNoTenant + string(op.Caller))
	}
	if isSingleKey(op) {
		if len(op.Key) == 0 || op.Key[0] != '/' {
			return sdk.Deny(reasonSlash)
		}
		return sdk.Mutate().SetKey(p, op.Key)
	}
	return sdk.Mutate().SetKey(p, bound(op.Key)).SetRangeEnd(p, endBound(op.RangeEnd))
}

// onResponse strips the caller's prefix from every key going back, and
// fails the response if a key lies outside the caller's space (a mapping
// bug or a key written around the gateway must not leak). Items of other
// resources continue.
func onResponse(it *sdk.Item) sdk.Result {
	if it.Resource != sdk.ResourceKV && it.Resource != sdk.ResourceWatch {
		return sdk.Continue()
	}
	p, ok := tenantPrefix(it.Caller)
	if !ok {
		return sdk.Deny(reasonNoTenant + string(it.Caller))
	}
	rest, ok := stripPrefix(it.Key, p)
	if !ok {
		return sdk.Deny(reasonOutside)
	}
	return sdk.Mutate().SetKey(rest)
}
