package linearizable

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/storegate/storegate/internal/testenv"
)

// faultLog lists the faults a run injected, with how long each took.
type faultLog struct {
	mu    sync.Mutex
	items []string
}

func (f *faultLog) add(t *testing.T, start time.Time, format string, args ...any) {
	t.Helper()
	s := fmt.Sprintf(format, args...) + fmt.Sprintf(" (%v)", time.Since(start).Round(time.Millisecond))
	t.Logf("fault: %s", s)
	f.mu.Lock()
	f.items = append(f.items, s)
	f.mu.Unlock()
}

func (f *faultLog) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for i, s := range f.items {
		fmt.Fprintf(&b, "\n  %d. %s", i+1, s)
	}
	return b.String()
}

func (f *faultLog) len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.items)
}

// successes counts the operations of h that completed with a known
// outcome.
func (h *history) successes() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.recs {
		if !r.Out.Unknown {
			n++
		}
	}
	return n
}

// progressed waits (bounded) until n more operations of h have completed,
// so that clients do work between faults and after the last.
func progressed(ctx context.Context, h *history, n int, timeout time.Duration) error {
	want := h.successes() + n
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for h.successes() < want {
		select {
		case <-ctx.Done():
			return fmt.Errorf("clients completed %d of %d operations in %v", h.successes()-want+n, n, timeout)
		case <-tick.C:
		}
	}
	return nil
}

// runClients runs cs until stop is closed; the returned wait blocks until
// every client has returned.
func runClients(ctx context.Context, cs []*client, stop <-chan struct{}) (wait func()) {
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() { c.run(ctx, stop) })
	}
	return wg.Wait
}

// target is a store under test as the runs reach it.
type target struct {
	// name prefixes the runs' names, prefix their keys.
	name, prefix string
	// client is a client through the balancer, on a connection of its own;
	// direct one of the store itself, around the gateways.
	client, direct func(t *testing.T) store
	classify       errorClass
}

// injector injects faults while the clients of a run work and h records
// them; step fails the test when a fault does not go as planned, faults
// lists them.
type injector func(ctx context.Context, t *testing.T, h *history, step func(what string, err error), faults *faultLog)

// checkRuns runs on tg, within four minutes, the subtest named run, n
// clients under the faults inject injects (underFaults), then
// stale-read-caught (staleCaught).
func checkRuns(t *testing.T, tg target, run string, n int, inject injector) {
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	t.Run(run, func(t *testing.T) { underFaults(ctx, t, tg, run, n, inject) })
	t.Run("stale-read-caught", func(t *testing.T) { staleCaught(ctx, t, tg) })
}

// underFaults runs n clients of tg on four keys while inject injects
// faults, after a warm-up and until inject returns; then it stops the
// clients, closes the history with reads of the store itself and reports
// it as <name>-<run>.
func underFaults(ctx context.Context, t *testing.T, tg target, run string, n int, inject injector) {
	t.Helper()
	keys := keysUnder(tg.prefix+run+"/", 4)
	h, errs := newHistory(), newTally()
	var cs []*client
	for i := range n {
		cs = append(cs, newClient(i, tg.client(t), keys, h, errs, tg.classify))
	}
	stop := make(chan struct{})
	wait := runClients(ctx, cs, stop)
	stopped := false
	defer func() {
		if !stopped {
			close(stop)
			wait()
		}
	}()
	var faults faultLog
	step := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	step("warm-up", progressed(ctx, h, 100, 30*time.Second))
	inject(ctx, t, h, step, &faults)
	close(stop)
	wait()
	stopped = true
	if err := readBack(ctx, n, tg.direct(t), keys, h); err != nil {
		t.Fatal(err)
	}
	report(t, tg.name+"-"+run, h, errs, &faults)
}

// staleCaught runs three clients of tg on three keys and a fourth that
// serves reads from a cache of its earlier reads until it has served ten
// stale ones, closes the history with reads of the store itself and checks
// that the checker catches the stale reads (caught), as <name>-stale.
func staleCaught(ctx context.Context, t *testing.T, tg target) {
	t.Helper()
	keys := keysUnder(tg.prefix+"stale/", 3)
	h, errs := newHistory(), newTally()
	var cs []*client
	for i := range 3 {
		cs = append(cs, newClient(i, tg.client(t), keys, h, errs, tg.classify))
	}
	broken := newStaleStore(tg.client(t))
	cs = append(cs, newClient(3, broken, keys, h, errs, tg.classify))
	stop := make(chan struct{})
	wait := runClients(ctx, cs, stop)
	err := testenv.Eventually(ctx, 30*time.Second, func(context.Context) error {
		if n := broken.staleReads(); n < 10 {
			return fmt.Errorf("%d stale reads served", n)
		}
		return nil
	})
	close(stop)
	wait()
	if err != nil {
		t.Fatal(err)
	}
	if err := readBack(ctx, len(cs), tg.direct(t), keys, h); err != nil {
		t.Fatal(err)
	}
	caught(t, tg.name+"-stale", h, errs, broken)
}
