package plugins

import (
	"context"
	"strings"
	"testing"
)

// TestContinueAllocs: the continue path allocates nothing on the host.
//
// wazero itself allocates on every call of a runtime built
// WithCloseOnContextDone (CallWithStack starts a watcher goroutine with a
// channel and a cancel func: see internal/wasm's
// CloseModuleOnCanceledOrTimeout), which the host needs so that a deadline
// interrupts a looping guest. So the test measures that cost, as a bare
// CallWithStack into the same instance, and requires the whole Request to
// cost exactly as much: the host's own share is zero.
func TestContinueAllocs(t *testing.T) {
	m := &recMetrics{}
	h := newHost(t, []Spec{{Name: "noop", Path: guest(t, "continue"), Instances: 1}}, Options{Metrics: m})
	ctx := context.Background()
	op := put("/app/config", "value")
	request := func() {
		if err := h.Request(ctx, caller, op); err != nil {
			t.Fatal(err)
		}
	}
	request() // warm up
	in, v, err := h.plugins[0].acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stack := make([]uint64, 2)
	bareCall := func() {
		stack[0], stack[1] = uint64(in.buf), 0
		if err := in.onRequest.CallWithStack(ctx, stack); err != nil {
			t.Fatal(err)
		}
	}
	// wazero's watcher goroutine now and then allocates once more (its
	// scheduling varies), so each side is measured three times, alternately:
	// the host's share is zero when the cheapest whole Request costs no more
	// than the dearest bare call.
	total, bare := 1e9, 0.0
	for range 3 {
		bare = max(bare, testing.AllocsPerRun(2000, bareCall))
		v.release(in)
		total = min(total, testing.AllocsPerRun(2000, request))
		if in, v, err = h.plugins[0].acquire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	v.release(in)

	t.Logf("continue path: %.0f allocs/op in all, %.0f of them inside wazero's CallWithStack, %.0f on the host", total, bare, max(total-bare, 0))
	if total > bare {
		t.Errorf("the host allocates %.0f times per continue call (%.0f in all, %.0f in wazero)", total-bare, total, bare)
	}
}

// BenchmarkRequest100B and BenchmarkRequest10KB time the continue path
// through a C validator that reads every byte of the value (a charset
// check).
func BenchmarkRequest100B(b *testing.B) { benchmarkRequest(b, 100) }

func BenchmarkRequest10KB(b *testing.B) { benchmarkRequest(b, 10<<10) }

func benchmarkRequest(b *testing.B, size int) {
	h := newHost(b, []Spec{{Name: "charset", Path: guest(b, "charset")}}, Options{Metrics: &recMetrics{}})
	ctx := context.Background()
	op := put("/app/config", strings.Repeat("abcdefghij", size/10))
	if err := h.Request(ctx, caller, op); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		op := put("/app/config", strings.Repeat("abcdefghij", size/10))
		for pb.Next() {
			if err := h.Request(ctx, caller, op); err != nil {
				b.Fatal(err)
			}
		}
	})
}
