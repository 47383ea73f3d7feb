package sdk

import "bytes"

// spiffePrefix starts every SPIFFE ID.
var spiffePrefix = []byte("spiffe://")

// LastPathSegment returns the last segment of a SPIFFE ID's path, the
// usual workload or tenant name (spiffe://example.org/ns/prod/web gives
// "web"), as a view into id. ok is false when id is not a SPIFFE ID with a
// trust domain and a non-empty path whose last segment is neither empty,
// "." nor "..". It does not allocate.
func LastPathSegment(id []byte) (seg []byte, ok bool) {
	rest, found := bytes.CutPrefix(id, spiffePrefix)
	if !found {
		return nil, false
	}
	slash := bytes.IndexByte(rest, '/')
	if slash <= 0 { // no trust domain, or no path
		return nil, false
	}
	path := rest[slash:]
	seg = path[bytes.LastIndexByte(path, '/')+1:]
	if len(seg) == 0 || string(seg) == "." || string(seg) == ".." {
		return nil, false
	}
	return seg, true
}
