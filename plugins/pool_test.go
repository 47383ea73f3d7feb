package plugins

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// TestPoolExhaustionDenies: a caller that fills a plugin's pool with calls
// that run until their deadline (a guest looping on /bad keys) cannot turn
// the plugin off for the others. Every concurrent call beyond the pool
// size waits at most the plugin's timeout and is then denied, under
// failure: allow too, with a reason naming the plugin, and counted as a
// busy failure. A caller whose own deadline is sooner gives up at it.
//
// The guest's init spins 300ms, so a slot whose looping instance was
// interrupted stays empty that long while it is refilled: the pool is
// exhausted for 200ms (the loops) + 300ms (the refills), longer than the
// 200ms the others wait, however the goroutines are scheduled within
// 300ms.
func TestPoolExhaustionDenies(t *testing.T) {
	const (
		instances = 2
		timeout   = 200 * time.Millisecond
		victims   = 6
	)
	for _, policy := range []FailurePolicy{FailAllow, FailDeny} {
		t.Run(policy.String(), func(t *testing.T) {
			m := &recMetrics{}
			h := newHost(t, []Spec{{Name: "slow", Path: guest(t, "bad", "BAD_LOOP", "INIT_SPIN_MS=300"),
				Instances: instances, Timeout: timeout, Failure: policy}}, Options{Metrics: m})
			pl := h.plugins[0]
			ctx := context.Background()

			// The attacker's calls take every instance.
			attacker := make(chan error, instances)
			for range instances {
				go func() { attacker <- h.Request(ctx, caller, put("/bad/loop", "v")) }()
			}
			waitFor(t, "the looping calls to take every instance", func() bool { return len(pl.current.Load().free) == 0 })

			// Everyone else, meanwhile.
			start := time.Now()
			errs := make([]error, victims)
			took := make([]time.Duration, victims)
			var wg sync.WaitGroup
			for i := range victims {
				wg.Go(func() {
					errs[i] = h.Request(ctx, caller, put("/good/k", "v"))
					took[i] = time.Since(start)
				})
			}
			// One with a deadline sooner than the plugin's timeout.
			var early error
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
				defer cancel()
				early = h.Request(ctx, caller, put("/good/early", "v"))
			})
			wg.Wait()
			for i, err := range errs {
				denied(t, err, "plugin slow failed: busy: no instance free within 200ms (all 2 busy)")
				if took[i] > 2*time.Second { // the old bound was max(1s, 10×timeout), then the call
					t.Errorf("a waiting call took %s", took[i])
				}
			}
			denied(t, early, "plugin slow did not run")
			if !errors.Is(early, context.DeadlineExceeded) {
				t.Errorf("the early caller's denial is not its deadline: %v", early)
			}

			// The attacker's own calls timed out: under allow they pass
			// (the guest's failure, as configured), under deny they are
			// denied.
			for range instances {
				err := <-attacker
				if policy == FailAllow && err != nil {
					t.Errorf("looping call under failure: allow: %v", err)
				}
				if policy == FailDeny {
					denied(t, err, "plugin slow failed: timeout: ")
				}
			}
			if got := m.failed("slow", "busy"); got != victims {
				t.Errorf("busy failures counted: %v, want %d", m.failures, victims)
			}
			if got := m.failed("slow", "timeout"); got != instances {
				t.Errorf("timeout failures counted: %v, want %d", m.failures, instances)
			}

			// Once the slots are refilled, the plugin serves again.
			waitFor(t, "the pool to be refilled", func() bool { return len(pl.current.Load().free) == instances })
			if err := h.Request(ctx, caller, put("/good/k", "v")); err != nil {
				t.Fatalf("after the refill: %v", err)
			}
		})
	}
}

// TestPoolExhaustionResponse: the response hook's calls are bounded and
// denied the same way.
func TestPoolExhaustionResponse(t *testing.T) {
	m := &recMetrics{}
	h := newHost(t, []Spec{{Name: "one", Path: guest(t, "continue", "CAPS=2"), Instances: 1,
		Timeout: 50 * time.Millisecond, Failure: FailAllow}}, Options{Metrics: m})
	in, v, err := h.plugins[0].acquire(context.Background()) // hold the only instance
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = h.Response(context.Background(), caller, get("/k", ""), []byte("/k"), []byte("v"))
	denied(t, err, "plugin one failed: busy: no instance free within 50ms (all 1 busy)")
	v.release(in)
	if _, _, err := h.Response(context.Background(), caller, get("/k", ""), []byte("/k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if m.failed("one", "busy") != 1 || m.total() != 1 {
		t.Errorf("failures counted: %v, want one busy", m.failures)
	}
}
