package policy

import (
	"sync"
	"unsafe"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/storegate/storegate/gate"
)

// decisionCache remembers the decisions of one policy version. A decision is
// a pure function of the input when the policy calls no non-deterministic
// builtin (time.now_ns, http.send, rand.intn...), so within one version the
// same caller and op always get the same answer; a reload starts a new
// version with an empty cache. Ops that carry a service (slices and maps)
// are not cached.
//
// The cache is bounded in bytes: every entry is accounted as the bytes of
// its strings plus cacheEntryOverhead, and when an entry would take the
// total past the budget the cache is emptied and refills with what is hot.
// That costs one cold evaluation per entry after a reset, keeps the hot path
// to one read-locked map lookup, and never lets an attacker who sprays
// distinct keys grow memory. Ops whose key and range end (or whose method,
// session, datacenter and owner) are longer than maxCachedKeyBytes are never
// cached, nor looked up: a few requests with megabyte keys would otherwise
// fill the budget on their own and empty the cache of everyone's hot
// entries every few requests.
type decisionCache struct {
	mu    sync.RWMutex
	m     map[cacheKey]cachedDecision
	bytes int64 // accounted bytes of the entries in m
	max   int64 // the budget
}

// cacheKey is every input field a decision may depend on, except the
// service (ops with one are not cached).
type cacheKey struct {
	caller                     spiffeid.ID
	protocol                   gate.Protocol
	resource                   gate.Resource
	action                     gate.Action
	prevKV, foreign            bool
	method, key, end           string
	session, datacenter, owner string
	lease                      int64
	valueSize, txnIndex        int
}

// cachedDecision is what a decision of the cache's own version holds beyond
// its revision, which is the version's.
type cachedDecision struct {
	effect gate.Effect
	reason string
}

const (
	// maxCachedKeyBytes bounds the key and range end of a cached op
	// together, and its method, session, datacenter and owner together.
	maxCachedKeyBytes = 512
	// maxCachedEntryBytes bounds an entry as accounted (its reason is the
	// policy's and may be long even for a short key).
	maxCachedEntryBytes = 4096
	// cacheEntryOverhead is what an entry costs beyond the bytes of its
	// strings: the map slot of a cacheKey and a cachedDecision (176 bytes
	// on 64-bit platforms) at the occupancy a Go map keeps (at most 7/8 of
	// a table's slots are used, and tables grow by splitting in two), its
	// control byte, and the size-class rounding of the allocation that
	// holds the entry's strings and of the reason's. TestCacheEntryOverhead
	// measures about 200 bytes in a full cache of 8 MiB; the rest is margin
	// for a table that just grew.
	cacheEntryOverhead = 256
	// legacyEntryBytes converts the deprecated Config.CacheSize (entries)
	// to bytes: the overhead and 128 bytes of strings (a 25-byte SPIFFE
	// ID, a 22-byte method, a key of some 20 bytes and a short reason).
	legacyEntryBytes = cacheEntryOverhead + 128
)

func newDecisionCache(budget int64) *decisionCache {
	if budget <= 0 {
		return nil
	}
	return &decisionCache{m: make(map[cacheKey]cachedDecision, min(budget/cacheEntryOverhead, 1024)), max: budget}
}

// cacheable reports whether an op is small enough to be cached.
func cacheable(op *gate.Op) bool {
	return len(op.Keys.Key)+len(op.Keys.End) <= maxCachedKeyBytes &&
		len(op.Method)+len(op.Session)+len(op.Datacenter)+len(op.Owner) <= maxCachedKeyBytes
}

// keyOf is the cache key of an op. Its key and end alias the op's byte
// slices (no copy on the hot path): a key is only stored after owned()
// copies them.
func keyOf(caller gate.Identity, op *gate.Op) cacheKey {
	return cacheKey{
		caller: caller.ID, protocol: op.Protocol, resource: op.Resource, action: op.Action,
		prevKV: op.PrevKV, foreign: op.Foreign, method: op.Method,
		key:     unsafe.String(unsafe.SliceData(op.Keys.Key), len(op.Keys.Key)),
		end:     unsafe.String(unsafe.SliceData(op.Keys.End), len(op.Keys.End)),
		session: op.Session, datacenter: op.Datacenter, owner: op.Owner, lease: op.Lease,
		valueSize: op.ValueSize, txnIndex: op.TxnIndex,
	}
}

// strings returns the bytes of k's own strings (the caller's ID is counted
// too, though entries of one caller share it).
func (k *cacheKey) strings() int {
	return len(k.caller.String()) + len(k.method) + len(k.key) + len(k.end) +
		len(k.session) + len(k.datacenter) + len(k.owner)
}

// owned returns k with its strings copied, into one allocation, out of the
// op's memory (which may be a whole request's buffer).
func (k *cacheKey) owned() cacheKey {
	o := *k
	buf := make([]byte, 0, len(k.method)+len(k.key)+len(k.end)+len(k.session)+len(k.datacenter)+len(k.owner))
	for _, s := range []*string{&o.method, &o.key, &o.end, &o.session, &o.datacenter, &o.owner} {
		start := len(buf)
		buf = append(buf, *s...)
		*s = unsafe.String(unsafe.SliceData(buf[start:]), len(*s))
	}
	return o
}

// entryBytes is what an entry is accounted as.
func entryBytes(k *cacheKey, d *gate.Decision) int64 {
	return int64(cacheEntryOverhead + k.strings() + len(d.Reason))
}

func (c *decisionCache) get(k *cacheKey) (cachedDecision, bool) {
	c.mu.RLock()
	d, ok := c.m[*k]
	c.mu.RUnlock()
	return d, ok
}

func (c *decisionCache) put(k *cacheKey, d gate.Decision) {
	n := entryBytes(k, &d)
	if n > maxCachedEntryBytes || n > c.max {
		return
	}
	o := k.owned()
	c.mu.Lock()
	if _, ok := c.m[o]; !ok { // a racing put may have stored it already
		if c.bytes+n > c.max {
			clear(c.m)
			c.bytes = 0
		}
		c.m[o] = cachedDecision{effect: d.Effect, reason: d.Reason}
		c.bytes += n
	}
	c.mu.Unlock()
}

// deterministic reports whether no module calls a non-deterministic
// builtin, so that decisions may be cached.
func deterministic(c *ast.Compiler) bool {
	ok := true
	for _, m := range c.Modules {
		ast.WalkExprs(m, func(x *ast.Expr) bool {
			if !x.IsCall() {
				return !ok
			}
			if b, found := ast.BuiltinMap[x.Operator().String()]; found && b.Nondeterministic {
				ok = false
			}
			return !ok
		})
	}
	return ok
}
