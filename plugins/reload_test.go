package plugins

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/storegate/storegate/gate"
)

// replace writes data next to path and renames it over path, as a deploy
// does.
func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "guard.wasm")
	replace(t, path, guestBytes(t, "continue"))
	reloads := make(chan error, 16)
	m := &recMetrics{}
	h := newHost(t, []Spec{{Name: "guard", Path: path, Instances: 2}}, Options{
		Metrics:  m,
		OnReload: func(plugin string, err error) { reloads <- err },
	})
	ctx, cancel := context.WithCancel(context.Background())
	watched := make(chan error, 1)
	go func() { watched <- h.Watch(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-watched; err != nil {
			t.Errorf("Watch: %v", err)
		}
	})

	// Callers keep calling through the reloads: every call is served, by
	// the old version (nil) or the new one (its deny), never dropped.
	var stop atomic.Bool
	var wg sync.WaitGroup
	var calls atomic.Int64
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				err := h.Request(context.Background(), caller, put("/secret/x", "v"))
				if ge := gate.AsError(err); err != nil && (ge == nil || ge.Reason != "plugin guard: keys under /secret are not allowed") {
					t.Errorf("call during reload: %v", err)
					return
				}
				calls.Add(1)
			}
		})
	}
	defer func() {
		stop.Store(true)
		wg.Wait()
		if calls.Load() == 0 {
			t.Error("no calls ran during the reloads")
		}
	}()

	replace(t, path, guestBytes(t, "deny", `DENY_PREFIX="/secret"`))
	waitFor(t, "the new version to serve", func() bool {
		return h.Request(context.Background(), caller, put("/secret/x", "v")) != nil
	})
	denied(t, h.Request(context.Background(), caller, put("/secret/x", "v")), "plugin guard: keys under /secret are not allowed")

	// A broken replacement is refused; the last good version serves on.
	replace(t, path, guestBytes(t, "continue", "NO_ON_REQUEST"))
	waitFor(t, "the broken version to be refused", func() bool {
		for {
			select {
			case err := <-reloads:
				if err != nil {
					return true
				}
			default:
				return false
			}
		}
	})
	for range 10 {
		denied(t, h.Request(context.Background(), caller, put("/secret/x", "v")), "plugin guard: keys under /secret are not allowed")
	}
	if m.failed("guard", "abi") != 1 {
		t.Errorf("failures: %v, want one abi", m.failures)
	}
}

// waitFor polls cond until it holds, failing the test after 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestClose: calls after Close are denied; Close waits for nothing else.
func TestClose(t *testing.T) {
	h, err := New(context.Background(), []Spec{{Name: "noop", Path: guest(t, "continue")}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	denied(t, h.Request(context.Background(), caller, put("/k", "v")), "plugin noop did not run")
	if err := h.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestReloadMutatorFailureAllow: a validator configured with failure:
// allow cannot be reloaded into a mutator: the new version is refused,
// with an error naming the plugin, and the old one serves on.
func TestReloadMutatorFailureAllow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "guard.wasm")
	replace(t, path, guestBytes(t, "deny", `DENY_PREFIX="/secret"`))
	var reloads []error
	m := &recMetrics{}
	h := newHost(t, []Spec{{Name: "guard", Path: path, Failure: FailAllow}}, Options{
		Metrics:  m,
		OnReload: func(plugin string, err error) { reloads = append(reloads, err) },
	})
	pl := h.plugins[0]
	replace(t, path, guestBytes(t, "upper", "CAPS=1"))
	err := h.reload(context.Background(), pl)
	if err == nil {
		t.Fatal("a mutator was reloaded under failure: allow")
	}
	for _, want := range []string{`plugin "guard"`, path, "a mutator cannot run under failure: allow"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if len(reloads) != 1 || reloads[0] == nil {
		t.Errorf("OnReload got %v", reloads)
	}
	if m.failed("guard", "abi") != 1 {
		t.Errorf("failures: %v, want one abi", m.failures)
	}
	if c := h.chain.Load(); len(c.request) != 1 || pl.current.Load().caps.Mutator() {
		t.Error("the mutator is in the chain")
	}
	denied(t, h.Request(context.Background(), caller, put("/secret/x", "v")), "plugin guard: keys under /secret are not allowed")
	op := put("/public/x", "v")
	if err := h.Request(context.Background(), caller, op); err != nil || string(op.Value) != "v" {
		t.Errorf("the old version: %v, value %q", err, op.Value)
	}
}
