package drain

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// drainTimeout is the gateways' drain.timeout in these tests.
const drainTimeout = 3 * time.Second

// exitSlack is what the process may take past drainTimeout to exit
// (flushing telemetry, closing upstream connections; a race-built binary
// on two shared cores).
const exitSlack = 5 * time.Second

// TestSIGTERMDrain sends SIGTERM to a gateway that every client is
// connected to (through HAProxy, while the second replica was not yet
// up), in the middle of their work, and proves what a graceful stop
// promises, each in a subtest:
//
//   - unary: of many concurrent two-key Txns from client/v3, every one
//     answered OK is in etcd (read directly), every failure is a retryable
//     code, none is half-applied, and the same clients go on writing
//     through the other replica (GOAWAY moved their connections);
//   - readyz: /readyz answered 503 before the etcd listener closed;
//   - exit: the process exited 0 within drain.timeout plus slack;
//   - watch: a client/v3 watch saw every event of etcd's history (read
//     directly) exactly once and in order across the move;
//   - lease: a LeaseKeepAlive stream moved and kept the lease alive past
//     its TTL (TimeToLive read directly);
//   - consul: a consul api blocking query held on the draining replica was
//     answered within drain.timeout without an error, re-issued, and got
//     the next change through the other replica.
func TestSIGTERMDrain(t *testing.T) {
	f := newFleet(t, drainTimeout)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	direct := f.direct(t)
	victim := f.gw[0]

	// Every connection made now reaches the first gateway: the second is
	// not running (HAProxy redispatches what it refuses).
	writers := []*clientv3.Client{f.etcdClient(t), f.etcdClient(t)}
	watcher, leaser := f.etcdClient(t), f.etcdClient(t)
	cc := f.consulClient(t)
	agent, err := api.NewClient(&api.Config{Address: f.consul.HTTPAddr})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent.KV().Put(&api.KVPair{Key: "drain/c", Value: []byte("0")}, nil); err != nil {
		t.Fatal(err)
	}

	start, err := direct.Get(ctx, "/drain/")
	if err != nil {
		t.Fatal(err)
	}
	fromRev := start.Header.Revision + 1
	watched := &events{}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	wch := watcher.Watch(wctx, "/drain/txn/", clientv3.WithPrefix(), clientv3.WithRev(fromRev))
	go watched.collect(wch)

	lease, err := leaser.Grant(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	kach, err := leaser.KeepAlive(ctx, lease.ID)
	if err != nil {
		t.Fatal(err)
	}
	renewals := &times{}
	go func() {
		for range kach {
			renewals.add(time.Now())
		}
		renewals.closed()
	}()

	blocking := &queries{}
	go blocking.loop(ctx, cc)

	f.env.Eventually(time.Minute, func(ctx context.Context) error {
		for _, m := range []string{"/etcdserverpb.Watch/Watch", "/etcdserverpb.Lease/LeaseKeepAlive"} {
			n, err := victim.Metric(ctx, "storegate_streams_open", map[string]string{"method": m})
			if err != nil {
				return err
			}
			if n < 1 {
				return fmt.Errorf("no %s stream open on the first gateway yet", m)
			}
		}
		if blocking.count() == 0 {
			return errors.New("the Consul blocking query has not begun")
		}
		return nil
	})
	f.startSecond(t)

	txns := &results{}
	stopWriting := make(chan struct{})
	var writing sync.WaitGroup
	stopWriters := sync.OnceFunc(func() { close(stopWriting); writing.Wait() })
	defer stopWriters()
	for w, c := range writers {
		for g := range 4 {
			writing.Go(func() { txns.write(ctx, c, fmt.Sprintf("%d.%d", w, g), stopWriting) })
		}
	}
	f.env.Eventually(time.Minute, func(context.Context) error {
		if n := txns.okCount(); n < 50 {
			return fmt.Errorf("%d txns done, want 50 before the signal", n)
		}
		return nil
	})

	probe := &readyProbe{admin: victim.Admin, listener: f.cfg[0].Listen.Etcd}
	pctx, pcancel := context.WithCancel(ctx)
	probed := make(chan struct{})
	go func() { defer close(probed); probe.run(pctx) }()

	inFlight := blocking.current()
	term := time.Now()
	if err := victim.Proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := victim.Proc.Wait(drainTimeout + exitSlack)
	took := time.Since(term)
	pcancel()
	<-probed

	t.Run("exit", func(t *testing.T) {
		if !exited {
			t.Fatalf("the gateway had not exited %v after SIGTERM (drain.timeout %v)", took, drainTimeout)
		}
		_, err := victim.Proc.Exited()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("the gateway exited with %v after a drain", ee)
		}
		t.Logf("exited 0 %v after SIGTERM (drain.timeout %v)", took.Round(time.Millisecond), drainTimeout)
		// Nothing was still in flight at the drain timeout: nothing was cut.
		for _, l := range strings.Split(victim.Proc.Logs(), "\n") {
			if strings.Contains(l, "still busy at the drain timeout") {
				t.Errorf("the drain cut what was in flight: %s", l)
			}
			if strings.Contains(l, "msg=drained") {
				t.Logf("gateway: %s", l)
			}
		}
	})
	t.Run("readyz", func(t *testing.T) {
		p := probe.result()
		if p.notReady.IsZero() || p.closed.IsZero() {
			t.Fatalf("not seen: /readyz 503 at %v, etcd listener closed at %v", p.notReady, p.closed)
		}
		if p.notReadyCode != http.StatusServiceUnavailable {
			t.Errorf("/readyz answered %d while draining, want 503", p.notReadyCode)
		}
		if !p.notReady.Before(p.closed) {
			t.Errorf("/readyz went 503 at %v, not before the listener closed at %v", p.notReady.Sub(term), p.closed.Sub(term))
		}
		t.Logf("after SIGTERM: /readyz 503 at %v, etcd listener refused connections at %v",
			p.notReady.Sub(term).Round(time.Millisecond), p.closed.Sub(term).Round(time.Millisecond))
	})

	// The clients go on through the second gateway.
	okAtExit := txns.okCount()
	f.env.Eventually(time.Minute, func(context.Context) error {
		if n := txns.okCount() - okAtExit; n < 40 {
			return fmt.Errorf("%d txns done since the first gateway exited, want 40", n)
		}
		return nil
	})
	stopWriters()

	t.Run("unary", func(t *testing.T) {
		all := txns.all()
		var ok, failed int
		for _, r := range all {
			a, errA := direct.Get(ctx, r.key+"/a")
			b, errB := direct.Get(ctx, r.key+"/b")
			if err := errors.Join(errA, errB); err != nil {
				t.Fatal(err)
			}
			has := func(g *clientv3.GetResponse) bool { return len(g.Kvs) == 1 && string(g.Kvs[0].Value) == r.key }
			if len(a.Kvs)+len(b.Kvs) > 0 && !(has(a) && has(b)) {
				t.Errorf("txn %s half-applied or wrong: a=%v b=%v (answer: %v)", r.key, a.Kvs, b.Kvs, r.err)
			}
			if r.err == nil {
				ok++
				if !has(a) || !has(b) {
					t.Errorf("txn %s answered OK but is not in etcd", r.key)
				}
				continue
			}
			failed++
			switch status.Code(r.err) {
			case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
				t.Logf("txn %s failed retryably (applied: %v): %v", r.key, has(a), r.err)
			default:
				t.Errorf("txn %s failed with a code no client retries: %v", r.key, r.err)
			}
		}
		t.Logf("%d txns from 2 clients that started on the drained replica: %d OK (%d after it exited), %d failed",
			len(all), ok, txns.okCount()-okAtExit, failed)
	})

	t.Run("watch", func(t *testing.T) {
		// The last write under the watched prefix (the fleet registry
		// writes elsewhere).
		last, err := direct.Get(ctx, "/drain/txn/", clientv3.WithPrefix(),
			clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend), clientv3.WithLimit(1))
		if err != nil || len(last.Kvs) == 0 {
			t.Fatalf("reading the last write: %v %v", last, err)
		}
		lastRev := last.Kvs[0].ModRevision
		want := history(ctx, t, direct, fromRev, lastRev)
		f.env.Eventually(time.Minute, func(context.Context) error {
			if got := watched.all(); len(got) < len(want) {
				return fmt.Errorf("the watch has %d of %d events", len(got), len(want))
			}
			return nil
		})
		got := watched.all()
		if err := watched.failure(); err != nil {
			t.Fatalf("the watch ended: %v", err)
		}
		if len(got) != len(want) {
			t.Fatalf("the watch saw %d events, etcd's history has %d", len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("event %d: watch saw %+v, etcd's history has %+v", i, got[i], want[i])
			}
		}
		n, err := f.gw[1].Metric(ctx, "storegate_streams_open", map[string]string{"method": "/etcdserverpb.Watch/Watch"})
		if err != nil || n < 1 {
			t.Errorf("no watch stream on the second gateway: %v %v", n, err)
		}
		t.Logf("the watch saw all %d events (revisions %d..%d) once, in order, across the drain", len(want), fromRev, lastRev)
	})

	t.Run("lease", func(t *testing.T) {
		expiry := term.Add(time.Duration(lease.TTL) * time.Second)
		f.env.Eventually(time.Minute, func(context.Context) error {
			if renewals.isClosed() {
				return nil // fails below: a closed channel does not reopen
			}
			if last := renewals.last(); !last.After(expiry) {
				return fmt.Errorf("last renewal %v after SIGTERM, want one past the TTL (%ds)", last.Sub(term), lease.TTL)
			}
			return nil
		})
		if renewals.isClosed() {
			t.Fatal("the keep-alive channel closed: client/v3 gave the lease up")
		}
		ttl, err := direct.TimeToLive(ctx, lease.ID)
		if err != nil {
			t.Fatal(err)
		}
		if ttl.TTL <= 0 {
			t.Fatalf("the lease is gone: TTL %d", ttl.TTL)
		}
		n, err := f.gw[1].Metric(ctx, "storegate_streams_open", map[string]string{"method": "/etcdserverpb.Lease/LeaseKeepAlive"})
		if err != nil || n < 1 {
			t.Errorf("no keep-alive stream on the second gateway: %v %v", n, err)
		}
		t.Logf("lease %x renewed %v after SIGTERM (TTL %ds); etcd says TTL %d", lease.ID,
			renewals.last().Sub(term).Round(time.Millisecond), lease.TTL, ttl.TTL)
	})

	t.Run("consul", func(t *testing.T) {
		cut, ok := blocking.after(inFlight)
		if !ok {
			t.Fatalf("the blocking query in flight at SIGTERM (#%d) has not returned", inFlight)
		}
		if cut.err != nil {
			t.Fatalf("the blocking query in flight at SIGTERM failed: %v", cut.err)
		}
		if d := cut.end.Sub(term); d > drainTimeout {
			t.Errorf("the blocking query in flight at SIGTERM returned %v after it, past drain.timeout %v", d, drainTimeout)
		}
		if _, err := agent.KV().Put(&api.KVPair{Key: "drain/c", Value: []byte("1")}, nil); err != nil {
			t.Fatal(err)
		}
		f.env.Eventually(time.Minute, func(context.Context) error {
			if !blocking.sawValue("1") {
				return errors.New("the blocking query has not seen the change")
			}
			return nil
		})
		if errs := blocking.errors(); len(errs) > 0 {
			t.Errorf("blocking queries failed: %v", errs)
		}
		t.Logf("the blocking query in flight at SIGTERM returned %v after it (index %d), was re-issued and saw the next change",
			cut.end.Sub(term).Round(time.Millisecond), cut.index)
	})
}

// event is a watch event as both sides report it.
type event struct {
	rev   int64
	typ   mvccpb.Event_EventType
	key   string
	value string
}

// events collects a watch's events.
type events struct {
	mu  sync.Mutex
	evs []event
	err error
}

func (e *events) collect(wch clientv3.WatchChan) {
	for resp := range wch {
		e.mu.Lock()
		if err := resp.Err(); err != nil {
			e.err = err
		}
		for _, ev := range resp.Events {
			e.evs = append(e.evs, event{rev: ev.Kv.ModRevision, typ: ev.Type, key: string(ev.Kv.Key), value: string(ev.Kv.Value)})
		}
		e.mu.Unlock()
	}
}

func (e *events) all() []event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]event(nil), e.evs...)
}

func (e *events) failure() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

// history is etcd's own record of the events under /drain/txn/ in
// [from, to], read directly.
func history(ctx context.Context, t *testing.T, direct *clientv3.Client, from, to int64) []event {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var out []event
	if to < from {
		return out
	}
	for resp := range direct.Watch(ctx, "/drain/txn/", clientv3.WithPrefix(), clientv3.WithRev(from)) {
		if err := resp.Err(); err != nil {
			t.Fatal(err)
		}
		for _, ev := range resp.Events {
			if ev.Kv.ModRevision > to {
				return out
			}
			out = append(out, event{rev: ev.Kv.ModRevision, typ: ev.Type, key: string(ev.Kv.Key), value: string(ev.Kv.Value)})
		}
		if len(out) > 0 && out[len(out)-1].rev >= to {
			return out
		}
	}
	t.Fatalf("reading etcd's history: %v", ctx.Err())
	return nil
}

// times records when something happened.
type times struct {
	mu   sync.Mutex
	t    time.Time
	done bool
}

func (r *times) add(t time.Time) { r.mu.Lock(); r.t = t; r.mu.Unlock() }
func (r *times) closed()         { r.mu.Lock(); r.done = true; r.mu.Unlock() }
func (r *times) last() time.Time { r.mu.Lock(); defer r.mu.Unlock(); return r.t }
func (r *times) isClosed() bool  { r.mu.Lock(); defer r.mu.Unlock(); return r.done }

// result is one Txn's answer.
type result struct {
	key string
	err error
}

// results are the Txns' answers.
type results struct {
	mu   sync.Mutex
	txns []result
	ok   int
}

// write puts key/a and key/b (value key) in one Txn, again and again with
// fresh keys, until stop.
func (r *results) write(ctx context.Context, c *clientv3.Client, who string, stop <-chan struct{}) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		key := fmt.Sprintf("/drain/txn/%s.%d", who, i)
		tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		_, err := c.Txn(tctx).Then(clientv3.OpPut(key+"/a", key), clientv3.OpPut(key+"/b", key)).Commit()
		cancel()
		r.mu.Lock()
		r.txns = append(r.txns, result{key: key, err: err})
		if err == nil {
			r.ok++
		}
		r.mu.Unlock()
	}
}

func (r *results) okCount() int { r.mu.Lock(); defer r.mu.Unlock(); return r.ok }
func (r *results) all() []result {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]result(nil), r.txns...)
}

// query is one blocking read's outcome.
type query struct {
	end   time.Time
	index uint64
	value string
	err   error
}

// queries is a consul api client's blocking-query loop, as a watch plan
// or `consul lock` runs one: read, then block on the index it returned.
type queries struct {
	mu   sync.Mutex
	done []query
}

func (q *queries) loop(ctx context.Context, c *api.Client) {
	var index uint64
	for ctx.Err() == nil {
		opts := (&api.QueryOptions{WaitIndex: index, WaitTime: time.Minute}).WithContext(ctx)
		pair, meta, err := c.KV().Get("drain/c", opts)
		r := query{end: time.Now(), err: err}
		if err == nil {
			r.index = meta.LastIndex
			if pair != nil {
				r.value = string(pair.Value)
			}
			index = meta.LastIndex
		}
		q.mu.Lock()
		q.done = append(q.done, r)
		q.mu.Unlock()
		if err != nil && ctx.Err() == nil {
			select { // the client's own back-off after a failure
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
			}
		}
	}
}

// count is how many reads have returned.
func (q *queries) count() int { q.mu.Lock(); defer q.mu.Unlock(); return len(q.done) }

// current is the number of the read in flight now.
func (q *queries) current() int { return q.count() }

// after is the outcome of read n, once it returned.
func (q *queries) after(n int) (query, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if n >= len(q.done) {
		return query{}, false
	}
	return q.done[n], true
}

func (q *queries) sawValue(v string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, r := range q.done {
		if r.err == nil && r.value == v {
			return true
		}
	}
	return false
}

func (q *queries) errors() []error {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []error
	for _, r := range q.done {
		if r.err != nil {
			out = append(out, r.err)
		}
	}
	return out
}

// readyProbe watches a draining gateway: when /readyz first failed, and
// when its etcd listener first refused a connection.
type readyProbe struct {
	admin, listener string
	mu              sync.Mutex
	r               probeResult
}

type probeResult struct {
	notReady     time.Time
	notReadyCode int
	closed       time.Time
}

func (p *readyProbe) run(ctx context.Context) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	hc := &http.Client{Timeout: time.Second}
	for {
		p.mu.Lock()
		r := p.r
		p.mu.Unlock()
		if r.notReady.IsZero() {
			code := 0
			if resp, err := hc.Get("http://" + p.admin + "/readyz"); err == nil {
				code = resp.StatusCode
				resp.Body.Close()
			}
			if code != http.StatusOK {
				r.notReady, r.notReadyCode = time.Now(), code
			}
		}
		if r.closed.IsZero() {
			if c, err := net.DialTimeout("tcp", p.listener, time.Second); err != nil {
				r.closed = time.Now()
			} else {
				c.Close()
			}
		}
		p.mu.Lock()
		p.r = r
		p.mu.Unlock()
		if !r.notReady.IsZero() && !r.closed.IsZero() {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (p *readyProbe) result() probeResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.r
}
