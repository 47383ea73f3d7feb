package policy

import (
	"context"
	"testing"

	"github.com/storegate/storegate/gate"
)

func TestCacheIsBoundedAndPerVersion(t *testing.T) {
	dir := copyShipped(t)
	e, err := Load(context.Background(), Config{Dir: dir, Logger: discardLogger(), CacheSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	v := e.current.Load()
	if v.cache == nil {
		t.Fatal("the shipped policy is deterministic but not cached")
	}
	for i := range 10 {
		op := kvOp(gate.ActionRead, "/app/k"+string(rune('a'+i)))
		if _, err := e.Authorize(context.Background(), web, op); err != nil {
			t.Fatal(err)
		}
		if n := len(v.cache.m); n > 4 {
			t.Fatalf("cache holds %d entries, bound is 4", n)
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
}

func TestNonDeterministicPolicyIsNotCached(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "authz.rego", `package storegate.authz

allow if time.now_ns() > 0
`)
	e, err := Load(context.Background(), Config{Dir: dir, Logger: discardLogger(), CacheSize: 64})
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
