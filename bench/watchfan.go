package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/storegate/storegate/internal/testenv"
)

// watchPrefix is the prefix every watcher of the fan-out table watches.
const watchPrefix = "/bench/w/"

// watchFanCounts are the numbers of watchers of the fan-out table.
var watchFanCounts = []int{1, 100, 1000}

// watchFanPuts is the number of puts whose delivery is timed per row.
const watchFanPuts = 200

// watchGoal is the fan-out goal: at 1,000 watchers storegate holds one
// watcher in etcd and every watcher gets each event within 50ms at p99.
const (
	watchGoalWatchers = 1000
	watchGoalP99      = 50 * time.Millisecond
)

// watchRow is one row of the fan-out table.
type watchRow struct {
	target   string
	watchers int
	// etcdWatchers is etcd_debugging_mvcc_watcher_total while the
	// watchers were open, less its value before they were.
	etcdWatchers int
	lat          []time.Duration // per put: put sent until the last watcher got it; sorted
	err          error
}

// watchFanBench opens 1, 100 and 1,000 watchers on watchPrefix, spread over
// the target's connections (clientv3 puts every watch of a connection with
// the same context on one gRPC stream, so there are at most -conns
// streams), directly on etcd and through storegate gateway g. For each row
// it reads etcd's watcher count from its /metrics at metricsURL, then puts
// watchFanPuts keys under the prefix one after the other through a direct
// client and times each put until every watcher got its event. It prints
// the table and the goal; it returns true when some row failed.
func watchFanBench(ctx context.Context, o options, dt, g *target, metricsURL string) (bool, error) {
	var rows []*watchRow
	for _, n := range watchFanCounts {
		for _, t := range []*target{dt, g} {
			if ctx.Err() != nil {
				return false, fmt.Errorf("interrupted")
			}
			fmt.Fprintf(os.Stderr, "bench: watch fan-out %d watcher(s) %s\n", n, t.name)
			rows = append(rows, watchFan(ctx, t, dt.clients[0], n, metricsURL))
		}
	}
	return reportWatchFan(os.Stdout, o, rows), nil
}

// watchFan measures one row: n watchers through t, puts through put.
func watchFan(ctx context.Context, t *target, put *clientv3.Client, n int, metricsURL string) *watchRow {
	row := &watchRow{target: t.name, watchers: n}
	fail := func(err error) *watchRow {
		row.err = err
		if t.hop != nil {
			row.err = t.hop.failure(err)
		}
		return row
	}
	before, err := etcdWatchers(ctx, metricsURL)
	if err != nil {
		return fail(err)
	}
	// remaining[i] counts down the watchers that still wait for put i;
	// the one that brings it to zero records the time and closes done[i].
	var (
		remaining = make([]atomic.Int64, watchFanPuts)
		last      = make([]atomic.Int64, watchFanPuts) // unix nanoseconds
		done      = make([]chan struct{}, watchFanPuts)
		werr      atomic.Pointer[error]
	)
	for i := range watchFanPuts {
		remaining[i].Store(int64(n))
		done[i] = make(chan struct{})
	}
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		// Until etcd let go of the watchers, the next row's count would
		// include them.
		_ = testenv.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
			now, err := etcdWatchers(ctx, metricsURL)
			if err == nil && now > before {
				err = fmt.Errorf("etcd still has %d watchers, %d before the row", now, before)
			}
			return err
		})
	}()
	created := make(chan error, n)
	for w := range n {
		c := t.clients[w%len(t.clients)]
		// From now (no start revision), as fan-out watchers usually are,
		// and as a gateway can share one etcd watch among them.
		ch := c.Watch(clientv3.WithRequireLeader(wctx), watchPrefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		wg.Go(func() {
			first := true
			for resp := range ch {
				if err := resp.Err(); err != nil {
					if first {
						created <- err
					} else if wctx.Err() == nil {
						werr.CompareAndSwap(nil, &err)
					}
					return
				}
				if first {
					first = false
					if !resp.Created {
						created <- fmt.Errorf("first watch response is not the created notice: %+v", resp.Header)
						return
					}
					created <- nil
				}
				for _, ev := range resp.Events {
					i, err := strconv.Atoi(strings.TrimPrefix(string(ev.Kv.Key), watchPrefix))
					if err != nil || i < 0 || i >= watchFanPuts {
						continue
					}
					if remaining[i].Add(-1) == 0 {
						last[i].Store(time.Now().UnixNano())
						close(done[i])
					}
				}
			}
		})
	}
	for range n {
		select {
		case err := <-created:
			if err != nil {
				return fail(fmt.Errorf("watch: %w", err))
			}
		case <-time.After(30 * time.Second):
			return fail(fmt.Errorf("watchers not created within 30s"))
		}
	}
	during, err := etcdWatchers(ctx, metricsURL)
	if err != nil {
		return fail(err)
	}
	row.etcdWatchers = during - before

	for i := range watchFanPuts {
		t0 := time.Now()
		if _, err := put.Put(ctx, fmt.Sprintf("%s%d", watchPrefix, i), value); err != nil {
			return fail(fmt.Errorf("put: %w", err))
		}
		select {
		case <-done[i]:
			row.lat = append(row.lat, time.Unix(0, last[i].Load()).Sub(t0))
		case <-time.After(10 * time.Second):
			if e := werr.Load(); e != nil {
				return fail(fmt.Errorf("watch: %w", *e))
			}
			return fail(fmt.Errorf("put %d: %d of %d watchers had no event after 10s", i, remaining[i].Load(), n))
		case <-ctx.Done():
			return fail(ctx.Err())
		}
	}
	slices.Sort(row.lat)
	return row
}

// etcdWatchers reads etcd_debugging_mvcc_watcher_total from etcd's /metrics.
func etcdWatchers(ctx context.Context, metricsURL string) (int, error) {
	const name = "etcd_debugging_mvcc_watcher_total"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("etcd metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, fmt.Errorf("etcd metrics: %s: %s", resp.Status, b)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		v, found := strings.CutPrefix(sc.Text(), name+" ")
		if !found {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return 0, fmt.Errorf("etcd metrics: %s: %w", name, err)
		}
		return int(f), nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("etcd metrics: %w", err)
	}
	return 0, fmt.Errorf("etcd metrics: no %s", name)
}

func (r *watchRow) quantile(q float64) time.Duration {
	s := sample{lat: r.lat}
	return s.quantile(q)
}

// reportWatchFan prints the fan-out table and the goal line.
func reportWatchFan(w io.Writer, o options, rows []*watchRow) (failed bool) {
	fmt.Fprintf(w, "\nwatch fan-out: N watchers on the prefix %s over at most %d connection(s) (one stream each), direct to etcd and through storegate;\n", watchPrefix, o.conns)
	fmt.Fprintf(w, "%d puts one after the other (direct to etcd); latency = put sent until the last of the N watchers got its event\n", watchFanPuts)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "watchers\ttarget\tetcd-watchers\tp50\tp99\tmax")
	var goal *watchRow
	for _, r := range rows {
		if r.err != nil || len(r.lat) == 0 {
			failed = true
			fmt.Fprintf(tw, "%d\t%s\tFAILED: %s\n", r.watchers, r.target, strings.ReplaceAll(fmt.Sprint(r.err), "\n", " | "))
			continue
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\n", r.watchers, r.target, r.etcdWatchers,
			fmtDur(r.quantile(0.50)), fmtDur(r.quantile(0.99)), fmtDur(r.lat[len(r.lat)-1]))
		if r.watchers == watchGoalWatchers && strings.HasPrefix(r.target, storegate) {
			goal = r
		}
	}
	tw.Flush()
	verdict := "UNKNOWN (the storegate row failed)"
	if goal != nil {
		verdict = "NOT MET"
		if goal.etcdWatchers == 1 && goal.quantile(0.99) < watchGoalP99 {
			verdict = "MET"
		}
		verdict += fmt.Sprintf(" (etcd watchers %d, p99 %s)", goal.etcdWatchers, fmtDur(goal.quantile(0.99)))
	}
	fmt.Fprintf(w, "goal: storegate, %d watchers: etcd watchers 1, p99 < %v: %s\n", watchGoalWatchers, watchGoalP99, verdict)
	return failed
}
