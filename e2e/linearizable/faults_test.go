package linearizable

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
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
