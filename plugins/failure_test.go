package plugins

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/storegate/storegate/gate"
)

// badPlugins are the modules that fail at call time, each on ops under
// /bad only, with the kind each failure must be counted as.
var badPlugins = []struct {
	name    string
	defines []string
	spec    Spec // Timeout, MemoryLimit
	op      func() *gate.Op
	resp    bool // the failure is in the response hook
	kind    FailureKind
	detail  string
	closed  bool // denied under failure: allow too
}{
	{name: "trap", defines: []string{"BAD_TRAP"}, kind: FailTrap, detail: "unreachable"},
	{name: "loop", defines: []string{"BAD_LOOP"}, spec: Spec{Timeout: 200 * time.Millisecond}, kind: FailTimeout, detail: "still running after 200ms, interrupted"},
	{name: "grow", defines: []string{"BAD_GROW"}, spec: Spec{MemoryLimit: 2 << 20, Timeout: time.Second}, kind: FailMemory, detail: "of 2097152 bytes of memory"},
	{name: "alloc", defines: []string{"BAD_ALLOC"}, kind: FailMemory, detail: "storegate_alloc(131072) returned 0",
		op: func() *gate.Op { return put("/bad/big", strings.Repeat("x", 100<<10)) }},
	{name: "malformed", defines: []string{"BAD_MALFORMED"}, kind: FailMalformed, detail: "lies outside the guest's"},
	{name: "validator-mutates", defines: []string{"BAD_MUTATE"}, kind: FailABI, detail: "a validator (no capability 1) returned mutate", closed: true},
	{name: "empty-key", defines: []string{"BAD_EMPTY_KEY", "CAPS=1"}, kind: FailABI, detail: "mutated key is empty"},
	{name: "range-end", defines: []string{"BAD_RANGE_END", "CAPS=2"}, resp: true, kind: FailABI, detail: "a response hook changed a range end"},
}

func TestFailures(t *testing.T) {
	for _, bp := range badPlugins {
		policies := []FailurePolicy{FailDeny, FailAllow}
		if slices.Contains(bp.defines, "CAPS=1") {
			// A mutator cannot load under failure: allow
			// (TestMutatorFailureAllow proves it is refused).
			policies = policies[:1]
		}
		for _, policy := range policies {
			t.Run(bp.name+"/"+policy.String(), func(t *testing.T) {
				m := &recMetrics{}
				spec := bp.spec
				spec.Name, spec.Path, spec.Failure, spec.Instances = bp.name, guest(t, "bad", bp.defines...), policy, 1
				h := newHost(t, []Spec{spec, {Name: "after", Path: guest(t, "charset")}}, Options{Metrics: m})
				ctx := context.Background()

				var err error
				var op *gate.Op
				if bp.resp {
					op = get("/bad", "")
					var key, value []byte
					key, value, err = h.Response(ctx, caller, op, []byte("/bad/k"), []byte("v"))
					if err == nil && (string(key) != "/bad/k" || string(value) != "v") {
						t.Errorf("item changed to %q = %q", key, value)
					}
				} else {
					op = put("/bad/k", "v")
					if bp.op != nil {
						op = bp.op()
					}
					before := *op
					err = h.Request(ctx, caller, op)
					if err == nil && (!bytes.Equal(op.Keys.Key, before.Keys.Key) || !bytes.Equal(op.Value, before.Value)) {
						t.Errorf("op changed to %q = %q", op.Keys.Key, op.Value)
					}
				}
				if policy == FailDeny || bp.closed {
					denied(t, err, "plugin "+bp.name+" failed: "+bp.kind.String()+": ")
					denied(t, err, bp.detail)
				} else if err != nil {
					t.Fatalf("failure: allow: got %v", err)
				}
				if got := m.failed(bp.name, bp.kind.String()); got != 1 || m.total() != 1 {
					t.Errorf("failures counted: %v, want one %s", m.failures, bp.kind)
				}

				// The only instance was replaced: the plugin serves the
				// next calls, and so do the others.
				for range 3 {
					if err := h.Request(ctx, caller, put("/good", "v")); err != nil {
						t.Fatalf("after the failure: %v", err)
					}
					if _, _, err := h.Response(ctx, caller, get("/good", ""), []byte("/good"), nil); err != nil {
						t.Fatalf("after the failure: %v", err)
					}
				}
				denied(t, h.Request(ctx, caller, put("/good", "v*")), "plugin after: value outside the charset")
				if m.total() != 1 {
					t.Errorf("failures counted: %v", m.failures)
				}
			})
		}
	}
}

// TestLoadFailures: modules that do not implement the ABI are refused at
// load, with an error naming the plugin and its file, and counted.
func TestLoadFailures(t *testing.T) {
	notWasm := filepath.Join(t.TempDir(), "not.wasm")
	if err := os.WriteFile(notWasm, []byte("\x00asm garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, want string
		kind             FailureKind
	}{
		{"missing-export", guest(t, "continue", "NO_ON_REQUEST"), `missing export "storegate_on_request" (i32, i32) -> i64`, FailABI},
		{"abi-version", guest(t, "continue", "ABI_VERSION=2"), "storegate_abi_version returned 2", FailABI},
		{"no-response-hook", guest(t, "deny", "CAPS=2"), `capability 2 (response hook) without a storegate_on_response export`, FailABI},
		{"unknown-caps", guest(t, "continue", "CAPS=4"), "unknown bits 0x4", FailABI},
		{"init-deny", guest(t, "continue", "INIT_DENY"), "storegate_init refused the configuration: bad config", FailABI},
		{"not-wasm", notWasm, "not a valid WebAssembly module", FailABI},
		{"no-file", filepath.Join(t.TempDir(), "absent.wasm"), "no such file", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &recMetrics{}
			_, err := New(context.Background(), []Spec{{Name: "good", Path: guest(t, "continue")}, {Name: tc.name, Path: tc.path}}, Options{Metrics: m})
			if err == nil {
				t.Fatal("New accepted the module")
			}
			for _, want := range []string{`plugin "` + tc.name + `"`, tc.path, tc.want} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if tc.kind != 0 && m.failed(tc.name, tc.kind.String()) != 1 {
				t.Errorf("failures counted: %v, want one %s", m.failures, tc.kind)
			}
		})
	}
}

// TestRecycle: a guest that leaks memory on every call is replaced once
// past half its limit, so it never reaches the limit and never fails.
func TestRecycle(t *testing.T) {
	m := &recMetrics{}
	// 4 pages (256 KiB) a call under a 2 MiB limit: without recycling, the
	// 8th call would trap.
	h := newHost(t, []Spec{{Name: "leak", Path: guest(t, "leak", "LEAK_PAGES=4"), MemoryLimit: 2 << 20, Instances: 1}}, Options{Metrics: m})
	for i := range 40 {
		if err := h.Request(context.Background(), caller, put("/k", "v")); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if m.total() != 0 {
		t.Errorf("failures: %v", m.failures)
	}
}

// TestAcquireHonoursContext: a caller waiting for an instance gives up
// when its context ends.
func TestAcquireHonoursContext(t *testing.T) {
	h := newHost(t, []Spec{{Name: "one", Path: guest(t, "continue"), Instances: 1}}, Options{})
	pl := h.plugins[0]
	in, v, err := pl.acquire(context.Background()) // hold the only instance
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = h.Request(ctx, caller, put("/k", "v"))
	denied(t, err, "plugin one did not run")
	v.release(in)
	if err := h.Request(context.Background(), caller, put("/k", "v")); err != nil {
		t.Fatal(err)
	}
}

// TestMutatorFailureAllow: a mutator (capability 1) configured with
// failure: allow is refused at load, with an error naming the plugin; a
// validator, with or without a response hook, is not.
func TestMutatorFailureAllow(t *testing.T) {
	for _, caps := range []string{"CAPS=1", "CAPS=3"} {
		m := &recMetrics{}
		path := guest(t, "prefix", `PREFIX="/t"`, caps)
		_, err := New(context.Background(), []Spec{{Name: "fine", Path: guest(t, "continue")},
			{Name: "tenant", Path: path, Failure: FailAllow}}, Options{Metrics: m})
		if err == nil {
			t.Fatalf("%s: a mutator loaded under failure: allow", caps)
		}
		for _, want := range []string{`plugin "tenant"`, path, "a mutator cannot run under failure: allow", "configure failure: deny"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not contain %q", caps, err, want)
			}
		}
		if m.failed("tenant", "abi") != 1 || m.total() != 1 {
			t.Errorf("%s: failures counted: %v, want one abi", caps, m.failures)
		}
	}
	newHost(t, []Spec{{Name: "upper", Path: guest(t, "upper", "CAPS=1")},
		{Name: "v", Path: guest(t, "continue"), Failure: FailAllow},
		{Name: "r", Path: guest(t, "continue", "CAPS=2"), Failure: FailAllow}}, Options{})
}
