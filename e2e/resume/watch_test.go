package resume

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// watcher is one client/v3 watch through the balancer and what it was
// delivered. The client resumes it by itself (from the revision after the
// last event it saw) whenever its stream breaks; the test never re-watches.
type watcher struct {
	name   string
	key    string
	prefix bool
	prevKV bool
	rev    int64 // WithRev; 0 watches from the revision it is created at

	mu       sync.Mutex
	created  int64 // the created notification's header revision
	events   []event
	progress int64 // the highest revision a progress notification carried
	failure  error // an error or cancel delivered, or the channel closed early
}

func (w *watcher) covers(key string) bool {
	if w.prefix {
		return strings.HasPrefix(key, w.key)
	}
	return key == w.key
}

// from is the first revision whose events the watcher must see.
func (w *watcher) from() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.rev > 0 {
		return w.rev
	}
	return w.created + 1
}

func (w *watcher) run(ctx context.Context, c *clientv3.Client) {
	opts := []clientv3.OpOption{clientv3.WithCreatedNotify()}
	if w.prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	if w.prevKV {
		opts = append(opts, clientv3.WithPrevKV())
	}
	if w.rev > 0 {
		opts = append(opts, clientv3.WithRev(w.rev))
	}
	for resp := range c.Watch(ctx, w.key, opts...) {
		w.mu.Lock()
		switch {
		case resp.Err() != nil || resp.Canceled:
			if w.failure == nil && ctx.Err() == nil {
				w.failure = fmt.Errorf("watch %s: canceled (%v) with %v", w.name, resp.Canceled, resp.Err())
			}
		case resp.Created:
			w.created = resp.Header.Revision
		case resp.IsProgressNotify():
			w.progress = max(w.progress, resp.Header.Revision)
		}
		for _, ev := range resp.Events {
			w.events = append(w.events, toEvent(ev, w.prevKV))
		}
		w.mu.Unlock()
	}
	w.mu.Lock()
	if w.failure == nil && ctx.Err() == nil {
		w.failure = fmt.Errorf("watch %s: the channel closed", w.name)
	}
	w.mu.Unlock()
}

// state is a copy of what the watcher has so far.
func (w *watcher) state() (events []event, progress int64, failure error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]event(nil), w.events...), w.progress, w.failure
}

// writer applies a known sequence of puts and deletes directly to etcd,
// retrying each operation until etcd takes it (a retried operation that
// had been applied shows twice in etcd's history, which is the truth the
// watchers are held to).
type writer struct {
	c       *clientv3.Client
	done    atomic.Int64 // operations applied
	lastRev atomic.Int64 // revision of the last applied operation under /w/
}

// ops is the i-th step of the sequence: keys under /w/ (puts and deletes),
// the single key /w/single, and a key outside every watch.
func ops(i int) []clientv3.Op {
	key := fmt.Sprintf("/w/k%d", i%7)
	var o []clientv3.Op
	if i%5 == 4 {
		o = append(o, clientv3.OpDelete(key))
	} else {
		o = append(o, clientv3.OpPut(key, fmt.Sprintf("v%d", i)))
	}
	switch {
	case i%11 == 10:
		o = append(o, clientv3.OpDelete("/w/single"))
	case i%3 == 0:
		o = append(o, clientv3.OpPut("/w/single", fmt.Sprintf("s%d", i)))
	}
	if i%4 == 1 {
		o = append(o, clientv3.OpPut("/other/x", fmt.Sprintf("o%d", i)))
	}
	return o
}

func (w *writer) run(ctx context.Context, stop <-chan struct{}) error {
	tick := time.NewTicker(15 * time.Millisecond) // pacing, not a wait for readiness
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		for _, op := range ops(i) {
			for {
				octx, cancel := context.WithTimeout(ctx, 3*time.Second)
				resp, err := w.c.Do(octx, op)
				cancel()
				if err == nil {
					w.done.Add(1)
					if strings.HasPrefix(string(op.KeyBytes()), "/w/") {
						w.lastRev.Store(opRevision(resp))
					}
					break
				}
				if ctx.Err() != nil {
					return fmt.Errorf("writer: step %d: %w", i, err)
				}
			}
		}
	}
}

func opRevision(r clientv3.OpResponse) int64 {
	if p := r.Put(); p != nil {
		return p.Header.Revision
	}
	return r.Del().Header.Revision
}

// TestWatchesResumeAcrossFaults proves that client/v3 watches through the
// balancer — one on a prefix, one on a single key, one with prev_kv, one
// started at a past revision — see exactly etcd's own history of their
// key range, each event once, in order, with the right prev_kv and no gap,
// while a writer (direct to etcd) puts and deletes a known sequence and the
// test kill -9s the gateway replica holding their stream (found by its
// /metrics: the one whose storegate_streams_open counts the watch stream)
// and restarts it, SIGTERMs the replica holding it then (it drains) and
// restarts it, kill -9s the etcd leader and restarts it, kill -9s the
// member serving the gateway's upstream watch stream (found by etcd's own
// watcher count) and restarts it, and SIGSTOPs the leader until the other
// members have elected another, then SIGCONTs it. No watcher may be canceled or closed on the way: the
// gateway's errors must be ones client/v3 retries.
func TestWatchesResumeAcrossFaults(t *testing.T) {
	f := newFleet(t, 2)
	ec := f.etcd
	direct := f.direct(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	// History before the watches, for the one that starts in the past.
	var past int64
	for i := range 6 {
		r, err := direct.Put(ctx, fmt.Sprintf("/w/k%d", i%3), fmt.Sprintf("pre%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			past = r.Header.Revision
		}
	}
	// The watches from now start after an event none of them covers
	// (client/v3 resumes such a watch at its created revision itself).
	start, err := direct.Put(ctx, "/other/start", "x")
	if err != nil {
		t.Fatal(err)
	}

	c := f.balanced(t)
	watchers := []*watcher{
		{name: "prefix", key: "/w/", prefix: true},
		{name: "single", key: "/w/single"},
		{name: "prevkv", key: "/w/", prefix: true, prevKV: true},
		{name: "past", key: "/w/", prefix: true, rev: past},
	}
	wctx, wcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { wcancel(); wg.Wait() }()
	for _, w := range watchers {
		wg.Add(1)
		go func() { defer wg.Done(); w.run(wctx, c) }()
	}
	f.env.Eventually(time.Minute, func(context.Context) error {
		for _, w := range watchers {
			w.mu.Lock()
			created, failure := w.created, w.failure
			w.mu.Unlock()
			if failure != nil {
				return failure
			}
			if created == 0 && w.rev == 0 {
				return fmt.Errorf("watch %s: not created yet", w.name)
			}
		}
		return nil
	})
	for _, w := range watchers {
		if created := w.from() - 1; w.rev == 0 && created != start.Header.Revision {
			t.Fatalf("watch %s created at revision %d, want %d (the store's revision then)", w.name, created, start.Header.Revision)
		}
	}

	wr := &writer{c: direct}
	stop := make(chan struct{})
	werr := make(chan error, 1)
	go func() { werr <- wr.run(ctx, stop) }()
	stopped := false
	defer func() {
		if !stopped {
			close(stop)
			<-werr
		}
	}()
	// caughtUp waits for the writer to apply n more operations and for
	// every prefix watcher to have seen the last of them.
	caughtUp := func(what string, n int64) {
		t.Helper()
		base := wr.done.Load()
		f.env.Eventually(2*time.Minute, func(context.Context) error {
			if d := wr.done.Load() - base; d < n {
				return fmt.Errorf("%s: the writer applied %d operations, want %d", what, d, n)
			}
			return nil
		})
		target := wr.lastRev.Load()
		var failed error // a watcher canceled or closed: no waiting cures it
		f.env.Eventually(2*time.Minute, func(context.Context) error {
			for _, w := range watchers {
				evs, _, failure := w.state()
				if failure != nil {
					failed = failure
					return nil
				}
				if !w.prefix {
					continue
				}
				if len(evs) == 0 || evs[len(evs)-1].KV.Mod < target {
					return fmt.Errorf("%s: watch %s has not seen revision %d yet (%d events)", what, w.name, target, len(evs))
				}
			}
			return nil
		})
		if failed != nil {
			t.Fatalf("%s: %v", what, failed)
		}
		t.Logf("%s: watchers caught up with revision %d", what, target)
	}
	caughtUp("before any fault", 30)

	// 1. kill -9 the replica that holds the watch stream, then restart it.
	gi := f.holder(t, methodWatch, 1)
	t.Logf("the watch stream is on gateway %d (%s); kill -9", gi, f.gateways[gi].Admin)
	f.gateways[gi].Proc.Kill()
	caughtUp("gateway killed", 30)
	if now := f.holder(t, methodWatch, 1); now == gi {
		t.Fatalf("the watch stream is still counted on the killed gateway %d", gi)
	}
	if err := f.gateways[gi].Start(ctx); err != nil {
		t.Fatal(err)
	}
	caughtUp("gateway restarted", 20)

	// 1b. SIGTERM the replica now holding it: it drains (ends the stream
	// with etcd's "server stopped") and exits; then restart it.
	gi = f.holder(t, methodWatch, 1)
	t.Logf("the watch stream is on gateway %d (%s); SIGTERM", gi, f.gateways[gi].Admin)
	if err := f.gateways[gi].Proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !f.gateways[gi].Proc.Wait(time.Minute) {
		t.Fatalf("gateway %d did not exit within a minute of SIGTERM", gi)
	}
	caughtUp("gateway drained", 30)
	if err := f.gateways[gi].Start(ctx); err != nil {
		t.Fatal(err)
	}
	caughtUp("drained gateway restarted", 20)

	// 2. kill -9 the etcd leader, then restart it.
	leader, err := ec.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("etcd leader is member %d; kill -9", leader)
	ec.Kill(leader)
	caughtUp("leader killed", 30)
	if err := ec.Restart(ctx, leader); err != nil {
		t.Fatal(err)
	}
	caughtUp("old leader restarted", 20)

	// 3. kill -9 the member serving the gateway's upstream watch stream
	// (found by etcd's own watcher count), then restart it.
	m := f.watchMember(t)
	t.Logf("etcd member %d serves the upstream watch stream; kill -9", m)
	ec.Kill(m)
	caughtUp("watch member killed", 30)
	if err := ec.Restart(ctx, m); err != nil {
		t.Fatal(err)
	}
	caughtUp("watch member restarted", 20)

	// 4. SIGSTOP the leader until the others elect another, then SIGCONT.
	leader, err = ec.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("etcd leader is member %d; SIGSTOP", leader)
	if err := ec.Members[leader].Proc.Pause(); err != nil {
		t.Fatal(err)
	}
	f.env.Eventually(time.Minute, func(ctx context.Context) error { return electedWithout(ctx, f, leader) })
	base := wr.done.Load()
	f.env.Eventually(2*time.Minute, func(context.Context) error {
		if d := wr.done.Load() - base; d < 20 {
			return fmt.Errorf("member %d stopped: the writer applied %d operations, want 20", leader, d)
		}
		return nil
	})
	if err := ec.Members[leader].Proc.Resume(); err != nil {
		t.Fatal(err)
	}
	caughtUp("stopped member continued", 20)

	close(stop)
	stopped = true
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	end, err := direct.Put(ctx, "/w/end", "end")
	if err != nil {
		t.Fatal(err)
	}
	endRev := end.Header.Revision
	truth := history(ctx, t, direct, endRev)
	t.Logf("etcd's history under /w/: %d events up to revision %d; the writer applied %d operations", len(truth), endRev, wr.done.Load())

	want := map[*watcher][]event{}
	for _, w := range watchers {
		from := w.from()
		for _, ev := range truth {
			if w.covers(ev.KV.Key) && ev.KV.Mod >= from {
				if !w.prevKV {
					ev.Prev = nil
				}
				want[w] = append(want[w], ev)
			}
		}
	}
	// Wait for every watcher's last event, then for a progress
	// notification at the final revision: it comes after every event
	// before it on the stream, so nothing (a late duplicate) can follow.
	f.env.Eventually(2*time.Minute, func(context.Context) error {
		for _, w := range watchers {
			evs, _, failure := w.state()
			if failure != nil {
				return failure
			}
			last := want[w][len(want[w])-1].KV.Mod
			if len(evs) == 0 || evs[len(evs)-1].KV.Mod < last {
				return fmt.Errorf("watch %s has %d events, not yet revision %d", w.name, len(evs), last)
			}
		}
		return nil
	})
	f.env.Eventually(time.Minute, func(ctx context.Context) error {
		if err := c.RequestProgress(ctx); err != nil {
			return err
		}
		for _, w := range watchers {
			if _, p, _ := w.state(); p < endRev {
				return fmt.Errorf("watch %s: progress at revision %d, want %d", w.name, p, endRev)
			}
		}
		return nil
	})
	for _, w := range watchers {
		got, _, failure := w.state()
		if failure != nil {
			t.Errorf("watch %s: %v", w.name, failure)
		}
		if d := diffEvents(got, want[w]); d != "" {
			t.Errorf("watch %s (from revision %d) differs from etcd's history:\n%s", w.name, w.from(), d)
		} else {
			t.Logf("watch %s: %d events from revision %d, as etcd has them", w.name, len(got), w.from())
		}
	}
}

// electedWithout reports whether the members other than stopped agree on
// a leader that is not stopped, asking each of them directly.
func electedWithout(ctx context.Context, f *fleet, stopped int) error {
	var leaders []uint64
	ids := map[uint64]bool{}
	for i, m := range f.etcd.Members {
		if i == stopped {
			continue
		}
		c, err := f.etcd.Client("etcd", i)
		if err != nil {
			return err
		}
		st, err := c.Status(ctx, m.ClientURL)
		c.Close()
		if err != nil {
			return fmt.Errorf("member %d: %w", i, err)
		}
		ids[st.Header.MemberId] = true
		leaders = append(leaders, st.Leader)
	}
	for _, l := range leaders {
		if l == 0 || !ids[l] || l != leaders[0] {
			return fmt.Errorf("the running members name leaders %x", leaders)
		}
	}
	return nil
}

// history is etcd's own history under /w/ from revision 1 to end, with
// prev_kv, read by a watch on etcd itself (not through a gateway).
func history(ctx context.Context, t *testing.T, direct *clientv3.Client, end int64) []event {
	t.Helper()
	hctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var evs []event
	for resp := range direct.Watch(hctx, "/w/", clientv3.WithPrefix(), clientv3.WithRev(1), clientv3.WithPrevKV()) {
		if err := resp.Err(); err != nil {
			t.Fatalf("etcd's own history: %v", err)
		}
		for _, ev := range resp.Events {
			evs = append(evs, toEvent(ev, true))
		}
		if len(evs) > 0 && evs[len(evs)-1].KV.Mod >= end {
			return evs
		}
	}
	t.Fatalf("etcd's own history: %v after %d events", errors.Join(hctx.Err(), errors.New("the watch ended")), len(evs))
	return nil
}
