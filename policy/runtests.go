package policy

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

// testTimeout bounds each test, as `opa test` does by default.
const testTimeout = 5 * time.Second

// Test runs the _test.rego files of the policy directory dir with OPA's own
// test runner, next to the directory's policies and the module generated
// from its intentions, and reports to w as `opa test` does (verbose: every
// test, with traces of the failing ones). ok is true when every test passed;
// err reports a directory that does not load, or one without tests.
func Test(ctx context.Context, dir string, w io.Writer, verbose bool) (ok bool, err error) {
	src, err := readSource(dir, true)
	if err != nil {
		return false, err
	}
	if src.missing {
		return false, fmt.Errorf("policy: %s does not exist", dir)
	}
	mods, err := src.modules()
	if err != nil {
		return false, err
	}
	store := inmem.New()
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return false, fmt.Errorf("policy: %w", err)
	}
	defer store.Abort(ctx, txn)

	runner := tester.NewRunner().
		SetDefaultRegoVersion(ast.RegoV1).
		SetStore(store).
		SetModules(mods).
		CapturePrintOutput(true).
		EnableTracing(verbose).
		SetTimeout(testTimeout)
	ch, err := runner.RunTests(ctx, txn)
	if err != nil {
		return false, fmt.Errorf("policy: %w", err)
	}

	ran, failed := 0, 0
	results := make(chan *tester.Result)
	go func() {
		defer close(results)
		for r := range ch {
			ran++
			if !r.Pass() {
				failed++
			}
			results <- r
		}
	}()
	if err := (tester.PrettyReporter{Output: w, Verbose: verbose}).Report(results); err != nil {
		return false, fmt.Errorf("policy: %w", err)
	}
	if ran == 0 {
		return false, fmt.Errorf("policy: no tests in %s", dir)
	}
	return failed == 0, nil
}
