package policy

import (
	"strings"
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
// The cache is bounded: when it is full it is emptied and refills with what
// is hot. That costs one cold evaluation per entry after a reset, keeps the
// hot path to one read-locked map lookup, and never lets an attacker who
// sprays distinct keys grow memory.
type decisionCache struct {
	mu  sync.RWMutex
	m   map[cacheKey]gate.Decision
	max int
}

// cacheKey is every input field a decision may depend on, except the
// service (ops with one are not cached).
type cacheKey struct {
	caller              spiffeid.ID
	protocol            gate.Protocol
	resource            gate.Resource
	action              gate.Action
	prevKV              bool
	method, key, end    string
	session, datacenter string
	lease               int64
	valueSize, txnIndex int
}

func newDecisionCache(max int) *decisionCache {
	if max <= 0 {
		return nil
	}
	return &decisionCache{m: make(map[cacheKey]gate.Decision, min(max, 4096)), max: max}
}

// keyOf is the cache key of an op. Its key and end alias the op's byte
// slices (no copy on the hot path): a key is only stored after owned()
// copies them.
func keyOf(caller gate.Identity, op *gate.Op) cacheKey {
	return cacheKey{
		caller: caller.ID, protocol: op.Protocol, resource: op.Resource, action: op.Action,
		prevKV: op.PrevKV, method: op.Method, key: unsafe.String(unsafe.SliceData(op.Keys.Key), len(op.Keys.Key)),
		end:     unsafe.String(unsafe.SliceData(op.Keys.End), len(op.Keys.End)),
		session: op.Session, datacenter: op.Datacenter, lease: op.Lease,
		valueSize: op.ValueSize, txnIndex: op.TxnIndex,
	}
}

// owned returns k with its key and end copied out of the op's memory.
func (k *cacheKey) owned() cacheKey {
	o := *k
	o.key, o.end = strings.Clone(k.key), strings.Clone(k.end)
	return o
}

func (c *decisionCache) get(k *cacheKey) (gate.Decision, bool) {
	c.mu.RLock()
	d, ok := c.m[*k]
	c.mu.RUnlock()
	return d, ok
}

func (c *decisionCache) put(k *cacheKey, d gate.Decision) {
	c.mu.Lock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[k.owned()] = d
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
