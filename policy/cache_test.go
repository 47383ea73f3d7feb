package policy

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/storegate/storegate/gate"
)

// loadCached loads dir with a decision cache of budget bytes, and an
// evaluation deadline a race-built test with megabyte keys does not hit.
// The fast path is off: the cache is what stands in front of OPA (the
// compiled intentions decide faster than a cache lookup, so the shipped
// engine's ops do not go through it).
func loadCached(tb testing.TB, dir string, budget int64) *Engine {
	tb.Helper()
	e, err := Load(context.Background(), Config{Dir: dir, Logger: discardLogger(), CacheBytes: budget, EvalTimeout: 10 * time.Second, DisableFastPath: true})
	if err != nil {
		tb.Fatal(err)
	}
	if e.current.Load().cache == nil {
		tb.Fatal("the policy is deterministic but not cached")
	}
	return e
}

// checkBudget fails when the cache holds more than its budget, by its own
// account or by a recount of its entries.
func checkBudget(tb testing.TB, c *decisionCache) {
	tb.Helper()
	c.mu.RLock()
	defer c.mu.RUnlock()
	var sum int64
	for k, d := range c.m {
		sum += entryBytes(&k, &gate.Decision{Reason: d.reason})
		if len(k.key)+len(k.end) > maxCachedKeyBytes {
			tb.Fatalf("the cache holds a key of %d bytes", len(k.key)+len(k.end))
		}
	}
	if sum != c.bytes {
		tb.Fatalf("the cache accounts %d bytes, its entries add up to %d", c.bytes, sum)
	}
	if c.bytes > c.max {
		tb.Fatalf("the cache holds %d bytes, its budget is %d", c.bytes, c.max)
	}
}

func TestCacheIsBoundedAndPerVersion(t *testing.T) {
	dir := copyShipped(t)
	const budget = 4 * (cacheEntryOverhead + 64)
	e := loadCached(t, dir, budget)
	v := e.current.Load()
	for i := range 10 {
		op := kvOp(gate.ActionRead, "/app/k"+string(rune('a'+i)))
		if _, err := e.Authorize(context.Background(), web, op); err != nil {
			t.Fatal(err)
		}
		checkBudget(t, v.cache)
		if n := len(v.cache.m); n == 0 || n > 4 {
			t.Fatalf("cache holds %d entries of at least %d bytes in %d", n, cacheEntryOverhead, budget)
		}
	}
	// A changed policy is a new version with its own, empty cache: the old
	// decision is not served from it.
	op := kvOp(gate.ActionWrite, "/other/x")
	if d, _ := e.Authorize(context.Background(), web, op); d.Effect != gate.Deny {
		t.Fatalf("before reload: %v", d.Effect)
	}
	writeFile(t, dir, IntentionsFile, `intentions:
  - name: web-other
    source: "spiffe://example.org/web"
    resources: [kv]
    actions: [write]
    keys: ["/other/**"]
    effect: allow
`)
	if err := e.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d, _ := e.Authorize(context.Background(), web, op); d.Effect != gate.Allow {
		t.Fatalf("after reload the cached deny survived: %v %q", d.Effect, d.Reason)
	}
	if e.current.Load().cache.max != budget {
		t.Fatalf("the reloaded version's budget is %d", e.current.Load().cache.max)
	}
}

// TestCacheSprayStaysInBudget sprays distinct keys of every length up to the
// limit, allowed and denied (whose reasons quote the key), single keys and
// ranges, from several callers: the cache never holds more than its budget.
func TestCacheSprayStaysInBudget(t *testing.T) {
	const budget = 64 << 10
	e := loadCached(t, shipped, budget)
	v := e.current.Load()
	callers := []gate.Identity{web, admin, batch}
	stored := 0
	for i := range 3000 {
		n := i % (maxCachedKeyBytes - 8)
		key := fmt.Sprintf("/%s/%d/%s", []string{"app", "other", "app/secret"}[i%3], i, strings.Repeat("\xff", n/2))
		var op *gate.Op
		if i%4 == 0 {
			op = prefixOp(gate.ResourceKV, gate.ActionRead, key)
		} else {
			op = kvOp(gate.ActionRead, key)
		}
		op.Method = "/etcdserverpb.KV/Range"
		if _, err := e.Authorize(context.Background(), callers[i%len(callers)], op); err != nil {
			t.Fatal(err)
		}
		checkBudget(t, v.cache)
		stored = max(stored, len(v.cache.m))
	}
	if stored < budget/(2*(cacheEntryOverhead+maxCachedKeyBytes)) {
		t.Errorf("the cache never held more than %d entries: is it caching?", stored)
	}
}

// TestCacheNeverStoresBigKeys: ops with huge keys, range ends, sessions or
// owners are decided every time and never stored, so a few of them cannot
// hold memory or empty the cache of everyone's hot entries.
func TestCacheNeverStoresBigKeys(t *testing.T) {
	e := loadCached(t, shipped, 16<<20)
	v := e.current.Load()
	hot := kvOp(gate.ActionRead, "/app/hot")
	if d, err := e.Authorize(context.Background(), web, hot); err != nil || d.Effect != gate.Allow {
		t.Fatalf("Authorize = %v, %v", d, err)
	}
	big := strings.Repeat("x", 1500<<10)
	justOver := strings.Repeat("y", maxCachedKeyBytes)
	ops := []*gate.Op{
		kvOp(gate.ActionWrite, "/other/"+big),
		kvOp(gate.ActionRead, "/app/"+big),
		{Protocol: gate.ProtocolEtcd, Resource: gate.ResourceKV, Action: gate.ActionRead,
			Keys: gate.KeyRange{Key: []byte("/other/a"), End: []byte("/other/" + big)}},
		kvOp(gate.ActionWrite, "/o"+justOver), // key of 514 bytes
		{Protocol: gate.ProtocolEtcd, Resource: gate.ResourceKV, Action: gate.ActionRead,
			Keys: gate.KeyRange{Key: []byte("/o" + justOver[:300]), End: []byte("/o" + justOver[:300])}},
		{Protocol: gate.ProtocolConsul, Resource: gate.ResourceSession, Action: gate.ActionRead, Session: big},
		{Protocol: gate.ProtocolConsul, Resource: gate.ResourceKV, Action: gate.ActionRead, Keys: gate.KeyRange{Key: []byte("/x")}, Datacenter: big},
		{Protocol: gate.ProtocolEtcd, Resource: gate.ResourceLease, Action: gate.ActionRevoke, Lease: 7, Foreign: true, Owner: big},
	}
	before := v.cache.bytes
	for round := range 3 {
		for i, op := range ops {
			if _, err := e.Authorize(context.Background(), web, op); err != nil {
				t.Fatalf("round %d, op %d: %v", round, i, err)
			}
			if v.cache.bytes != before || len(v.cache.m) != 1 {
				t.Fatalf("round %d, op %d: the cache grew to %d entries, %d bytes", round, i, len(v.cache.m), v.cache.bytes)
			}
		}
	}
	k := keyOf(web, hot)
	if _, ok := v.cache.get(&k); !ok {
		t.Error("big keys emptied the cache of its hot entry")
	}
	// At the limit an op is cached.
	at := kvOp(gate.ActionWrite, "/o"+justOver[:maxCachedKeyBytes-2])
	if _, err := e.Authorize(context.Background(), web, at); err != nil {
		t.Fatal(err)
	}
	if len(v.cache.m) != 2 {
		t.Errorf("an op with a key of %d bytes was not cached", maxCachedKeyBytes)
	}
}

// TestCacheEntryOverhead checks that cacheEntryOverhead is honest: the heap
// a full cache holds stays within its budget.
func TestCacheEntryOverhead(t *testing.T) {
	const budget = 8 << 20
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	c := newDecisionCache(budget)
	n := 0
	for c.bytes+entryBytes(&cacheKey{caller: web.ID, method: "/etcdserverpb.KV/Range", key: "/app/k00000000"}, &gate.Decision{}) <= budget {
		op := kvOp(gate.ActionRead, fmt.Sprintf("/app/k%08d", n))
		op.Method = "/etcdserverpb.KV/Range"
		k := keyOf(web, op)
		c.put(&k, gate.Decision{Effect: gate.Allow})
		n++
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	held := int64(ms.HeapAlloc) - int64(before)
	runtime.KeepAlive(c)
	strs := len("/etcdserverpb.KV/Range") + len("/app/k00000000") // the caller's ID is shared
	t.Logf("%d entries: %d bytes held, %d accounted, %.0f bytes per entry beyond its %d bytes of strings",
		n, held, c.bytes, float64(held)/float64(n)-float64(strs), strs)
	if held > c.bytes*11/10 {
		t.Errorf("a full cache holds %d bytes of heap, %d accounted: cacheEntryOverhead is too low", held, c.bytes)
	}
}

func TestCacheHitAllocatesNothing(t *testing.T) {
	e := loadCached(t, shipped, 1<<20)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, op := range []*gate.Op{
		kvOp(gate.ActionRead, "/app/config/db"),
		kvOp(gate.ActionRead, "/other/x"),
		prefixOp(gate.ResourceKV, gate.ActionRead, "/app/"),
		{Protocol: gate.ProtocolEtcd, Resource: gate.ResourceLease, Action: gate.ActionKeepalive, Lease: 9, Foreign: true, Owner: "spiffe://example.org/admin"},
	} {
		if _, err := e.Authorize(ctx, web, op); err != nil {
			t.Fatal(err)
		}
		if n := testing.AllocsPerRun(200, func() {
			if _, err := e.Authorize(ctx, web, op); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("a cached decision of %q allocates %v times", op.Keys.Key, n)
		}
	}
}

func TestCacheSizeIsABudgetInBytes(t *testing.T) {
	for _, tt := range []struct {
		cfg  Config
		want int64 // 0: no cache
	}{
		{Config{}, 0},
		{Config{CacheSize: 100}, 100 * legacyEntryBytes},
		{Config{CacheBytes: 1 << 20, CacheSize: 100}, 1 << 20},
		{Config{CacheBytes: -1}, 0},
	} {
		cfg := tt.cfg
		cfg.Dir, cfg.Logger = shipped, discardLogger()
		e, err := Load(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		c := e.current.Load().cache
		switch {
		case tt.want == 0 && c != nil:
			t.Errorf("%+v: a cache of %d bytes", tt.cfg, c.max)
		case tt.want != 0 && (c == nil || c.max != tt.want):
			t.Errorf("%+v: cache %+v, want a budget of %d", tt.cfg, c, tt.want)
		}
	}
}

func TestNonDeterministicPolicyIsNotCached(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "authz.rego", `package storegate.authz

allow if time.now_ns() > 0
`)
	e, err := Load(context.Background(), Config{Dir: dir, Logger: discardLogger(), CacheBytes: 1 << 20, EvalTimeout: mustLoadTimeout})
	if err != nil {
		t.Fatal(err)
	}
	if e.current.Load().cache != nil {
		t.Fatal("a policy calling time.now_ns is cached")
	}
	if d, err := e.Authorize(context.Background(), web, kvOp(gate.ActionRead, "/x")); err != nil || d.Effect != gate.Allow {
		t.Fatalf("Authorize = %v, %v", d.Effect, err)
	}
}
