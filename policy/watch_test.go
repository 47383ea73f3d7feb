package policy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/storegate/storegate/gate"
)

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWatchReloadsOnChange(t *testing.T) {
	dir := copyShipped(t)
	var logs logBuffer
	e, err := Load(context.Background(), Config{Dir: dir, Logger: newLogger(&logs), EvalTimeout: mustLoadTimeout})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Watch(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch = %v", err)
		}
	}()

	allowed := func(caller gate.Identity, key string) func() bool {
		return func() bool {
			d, err := e.Authorize(context.Background(), caller, kvOp(gate.ActionWrite, key))
			return err == nil && d.Effect == gate.Allow
		}
	}
	if allowed(batch, "/batch/x")() {
		t.Fatal("batch may write before the change")
	}
	// Watch may not have started watching yet: it reloads once it has, so
	// a change made before that is picked up all the same.
	writeFile(t, dir, "batch.rego", `package storegate.authz

allow if {
	input.caller.id == "spiffe://example.org/batch"
	startswith(input.op.key, "/batch/")
}
`)
	eventually(t, "the new rule", allowed(batch, "/batch/x"))

	// A broken file is logged and the last good version stays.
	good := e.Revision()
	writeFile(t, dir, "batch.rego", "package storegate.authz\n\nallow if {\n")
	eventually(t, "the reload error", func() bool { return strings.Contains(logs.String(), "batch.rego:4") })
	if e.Revision() != good || !allowed(batch, "/batch/x")() {
		t.Errorf("a broken file replaced the last good version")
	}

	// Intentions are watched too.
	writeFile(t, dir, IntentionsFile, `intentions:
  - name: batch-jobs
    source: "spiffe://example.org/batch"
    resources: [kv]
    actions: [write]
    keys: ["/jobs/**"]
    effect: allow
`)
	writeFile(t, dir, "batch.rego", "package storegate.extra\n")
	eventually(t, "the new intentions", allowed(batch, "/jobs/1"))
	if allowed(web, "/app/x")() {
		t.Error("the old intentions still apply")
	}
}

func TestWatchMissingDirectory(t *testing.T) {
	e := mustLoad(t, t.TempDir()+"/nowhere", ModeEnforce)
	if err := e.Watch(context.Background()); err == nil || !strings.HasPrefix(err.Error(), "policy: watch ") {
		t.Errorf("Watch = %v", err)
	}
}
