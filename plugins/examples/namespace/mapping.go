package main

// The key mapping. A caller whose tenant is T sees keys K that start with
// "/"; the store holds them at P+K, where P = root + "/" + T. Every stored
// key of T thus starts with P+"/", and the tenant's whole space is the
// etcd range [P+"/", P+"0") ("0" is the byte after "/"), which is disjoint
// from every other tenant's because a tenant name holds no "/".
//
// Prefixing preserves order, so a range [k, e) of the caller maps to
// [P+k, P+e) — but only keys that start with "/" exist in the caller's
// space, so each bound is clamped to the tenant's range (see bound). The
// etcd range end "\x00" ("every key >= key") becomes P+"0", the end of
// the tenant's range, that is etcd's PrefixEnd(P+"/"); a range end that
// is empty (the single key) stays empty. A prefix query keeps its shape:
// [K, PrefixEnd(K)) maps to [P+K, PrefixEnd(P+K)), which a Consul
// ?recurse needs.

import (
	"bytes"

	"github.com/storegate/storegate/plugins/sdk"
)

// Bounds of the tenant's range, after P.
var (
	slash = []byte("/") // P+"/": the tenant's first possible key
	zero  = []byte("0") // P+"0": just past the tenant's last key
)

// prefixBuf holds the current caller's prefix P; reused, so that mapping
// allocates nothing.
var prefixBuf []byte

// tenantPrefix returns P = root + "/" + tenant for a caller's SPIFFE ID,
// in prefixBuf (valid until the next call); ok is false when the ID has no
// usable last path segment.
func tenantPrefix(caller []byte) (p []byte, ok bool) {
	tenant, ok := sdk.LastPathSegment(caller)
	if !ok {
		return nil, false
	}
	prefixBuf = append(append(append(prefixBuf[:0], root...), '/'), tenant...)
	return prefixBuf, true
}

// bound maps a range bound x of the caller's space to what follows P in
// the store: x itself when it starts with "/", else the nearer end of the
// tenant's range — "/" for a bound below every caller key (such as "" or
// "\x00"), "0" for one above them all. Comparing x with "/" stands for
// comparing P+x with P+"/", as P is common to both.
func bound(x []byte) []byte {
	switch {
	case len(x) > 0 && x[0] == '/':
		return x
	case bytes.Compare(x, slash) < 0:
		return slash
	default:
		return zero
	}
}

// isSingleKey reports whether the op addresses one key (no range end, or
// an empty one, which etcd reads as the single key).
func isSingleKey(op *sdk.Op) bool { return !op.IsRange() || len(op.RangeEnd) == 0 }

// endBound maps a non-empty range end: "\x00" (to the end of the key
// space) becomes the end of the tenant's range; any other end is a bound.
func endBound(end []byte) []byte {
	if len(end) == 1 && end[0] == 0 {
		return zero
	}
	return bound(end)
}

// stripPrefix returns key without P when key lies in the tenant's space
// (starts with P+"/"); ok is false otherwise.
func stripPrefix(key, p []byte) (rest []byte, ok bool) {
	if len(key) <= len(p) || !bytes.HasPrefix(key, p) || key[len(p)] != '/' {
		return nil, false
	}
	return key[len(p):], true
}
