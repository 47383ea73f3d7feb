package soak

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/storegate/storegate/internal/testenv"
)

// figures are what one gateway holds at a moment.
type figures struct {
	// HeapAlloc is the live heap right after a forced GC (runtime.MemStats
	// HeapAlloc, from /debug/pprof/heap?gc=1); HeapInuse is the heap spans
	// in use then, fragmentation included.
	HeapAlloc, HeapInuse uint64
	Goroutines           int // go_goroutines
	FDs                  int // /proc/PID/fd
	Streams              int // storegate_streams_open, all methods
	// Decisions is storegate_decisions_total by decision (allow, deny...).
	Decisions map[string]float64
}

func mib(b uint64) string { return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20)) }

// measure reads g's figures: counts, and a forced GC and the heap's
// MemStats from pprof.
func measure(ctx context.Context, g *testenv.Gateway) (figures, error) {
	f, err := counts(ctx, g)
	if err != nil {
		return f, err
	}
	heap, err := get(ctx, "http://"+g.Admin+"/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return f, err
	}
	for _, l := range strings.Split(heap, "\n") {
		if v, ok := strings.CutPrefix(l, "# HeapAlloc = "); ok {
			f.HeapAlloc, err = strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
		if v, ok := strings.CutPrefix(l, "# HeapInuse = "); ok {
			f.HeapInuse, err = strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
		if err != nil {
			return f, fmt.Errorf("heap profile: %q: %w", l, err)
		}
	}
	if f.HeapAlloc == 0 || f.HeapInuse == 0 {
		return f, fmt.Errorf("heap profile without MemStats:\n%.500s", heap)
	}
	return f, nil
}

// counts reads g's goroutines, streams and decisions from /metrics and
// its fds from /proc, leaving the heap out.
func counts(ctx context.Context, g *testenv.Gateway) (figures, error) {
	f := figures{Decisions: map[string]float64{}}
	m, err := g.Metrics(ctx)
	if err != nil {
		return f, err
	}
	if m["go_goroutines"] == nil {
		return f, fmt.Errorf("/metrics has no go_goroutines")
	}
	f.Goroutines = int(m.Sum("go_goroutines", nil))
	f.Streams = int(m.Sum("storegate_streams_open", nil))
	if fam := m["storegate_decisions_total"]; fam != nil {
		for _, s := range fam.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "decision" {
					f.Decisions[l.GetValue()] += s.GetCounter().GetValue()
				}
			}
		}
	}
	if f.FDs, err = g.Proc.OpenFDs(); err != nil {
		return f, err
	}
	return f, nil
}

func get(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %d %.200s", url, resp.StatusCode, b)
	}
	return string(b), nil
}

// settled waits until g is at rest: no stream open, and the fewest
// goroutines and fds seen in a window of a second no fewer than in the
// window before (what the clients closed has been torn down). It returns
// the figures then, the heap's included, with those fewest goroutines and
// fds. The fewest, not the last: HAProxy's health checks (one every 250ms
// per frontend) each hold a connection and a goroutine for a moment, so
// that a single reading may catch some in flight.
func settled(ctx context.Context, g *testenv.Gateway, timeout time.Duration) (figures, error) {
	type window struct {
		began           time.Time
		goroutines, fds int
	}
	var prev, cur *window
	var last figures
	err := testenv.Eventually(ctx, timeout, func(ctx context.Context) error {
		f, err := counts(ctx, g)
		if err != nil {
			return err
		}
		last = f
		if f.Streams != 0 {
			prev, cur = nil, nil
			return fmt.Errorf("%d streams still open", f.Streams)
		}
		if cur == nil {
			cur = &window{began: time.Now(), goroutines: f.Goroutines, fds: f.FDs}
		}
		cur.goroutines, cur.fds = min(cur.goroutines, f.Goroutines), min(cur.fds, f.FDs)
		if time.Since(cur.began) < time.Second {
			return fmt.Errorf("goroutines %d, fds %d: window not over", f.Goroutines, f.FDs)
		}
		done, was := cur, prev
		prev, cur = cur, nil
		if was == nil || done.goroutines < was.goroutines || done.fds < was.fds {
			return fmt.Errorf("fewest goroutines %d, fds %d in the last second: still falling", done.goroutines, done.fds)
		}
		return nil
	})
	if err != nil {
		return last, err
	}
	f, err := measure(ctx, g)
	f.Goroutines, f.FDs = prev.goroutines, prev.fds
	return f, err
}
