package etcd

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// etcdWatchers reads etcd's own watcher gauge. The embedded members run in
// this process and register their metrics in the default registry, which
// their /metrics endpoint serves; the gauge counts the watchers of every
// member of the process, so tests compare it with its value before they
// watch (the package's tests do not run in parallel).
func etcdWatchers(t testing.TB) int {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "etcd_debugging_mvcc_watcher_total" {
			return int(mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
	t.Fatal("etcd_debugging_mvcc_watcher_total is not registered")
	return 0
}

// waitWatchers waits until etcd holds want watchers.
func waitWatchers(t testing.TB, want int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("etcd to hold %d watchers", want), func() bool { return etcdWatchers(t) == want })
}

// hubWatch is a raw Watch stream for tests that run many at once: it
// reports errors instead of failing the test from other goroutines.
type hubWatch struct {
	s      pb.Watch_WatchClient
	cancel context.CancelFunc
}

func openHubWatch(ctx context.Context, wc pb.WatchClient) (*hubWatch, error) {
	ctx, cancel := context.WithCancel(ctx)
	s, err := wc.Watch(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	return &hubWatch{s: s, cancel: cancel}, nil
}

func (w *hubWatch) create(cr *pb.WatchCreateRequest) error {
	return w.s.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: cr}})
}

// TestWatchHubFanOut: 1,000 watches of one prefix, over 250 caller
// streams on 10 connections, cost etcd one watcher; every watch gets every
// event once, in order; the last one leaving frees etcd's watcher.
func TestWatchHubFanOut(t *testing.T) {
	e := newEnv(t, envConfig{})
	base := etcdWatchers(t)
	// 100,000 deliveries take a while under the race detector.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const (
		conns     = 10
		streams   = 250
		perStream = 4
		events    = 100
	)
	var clients []pb.WatchClient
	for range conns {
		clients = append(clients, pb.NewWatchClient(e.conn(t, "reader")))
	}
	ws := make([]*hubWatch, streams)
	for i := range ws {
		w, err := openHubWatch(ctx, clients[i%conns])
		mustOK(t, err)
		ws[i] = w
		for range perStream {
			mustOK(t, w.create(watchPrefix("/app/fan/")))
		}
	}
	for i, w := range ws {
		for j := range perStream {
			r, err := w.s.Recv()
			mustOK(t, err)
			if !r.Created || r.Canceled || r.WatchId != int64(j) {
				t.Fatalf("stream %d, create %d: got %v, want watch %d created", i, j, r, j)
			}
		}
	}
	if got := etcdWatchers(t) - base; got != 1 {
		t.Fatalf("etcd holds %d watchers for %d watches of one prefix, want 1", got, streams*perStream)
	}
	if feeds, lanes := e.srv.hub.shared(); feeds != 1 || lanes != 1 {
		t.Fatalf("the hub holds %d shared feeds on %d upstream streams, want 1 on 1", feeds, lanes)
	}

	// Every watch gets every event once, in order. Events are put one at
	// a time, each once the last went everywhere; latency is measured from
	// just before the put, to each watch and to the last of them.
	var mu sync.Mutex
	putAt := make([]time.Time, events)
	var lat []time.Duration
	counts := make([]int, events)
	reached := make([]chan struct{}, events)
	for n := range reached {
		reached[n] = make(chan struct{})
	}
	errc := make(chan error, streams)
	for i, w := range ws {
		go func() {
			next := make([]int, perStream)
			for slices.Min(next) < events {
				r, err := w.s.Recv()
				if err != nil {
					errc <- fmt.Errorf("stream %d: %v", i, err)
					return
				}
				if r.WatchId < 0 || r.WatchId >= perStream {
					errc <- fmt.Errorf("stream %d: response of watch %d: %v", i, r.WatchId, r)
					return
				}
				now := time.Now()
				for _, ev := range r.Events {
					n, _ := strconv.Atoi(string(ev.Kv.Value))
					if n != next[r.WatchId] {
						errc <- fmt.Errorf("stream %d watch %d: got event %d, want %d", i, r.WatchId, n, next[r.WatchId])
						return
					}
					next[r.WatchId]++
					mu.Lock()
					lat = append(lat, now.Sub(putAt[n]))
					if counts[n]++; counts[n] == streams*perStream {
						close(reached[n])
					}
					mu.Unlock()
				}
			}
			errc <- nil
		}()
	}
	var all []time.Duration
	finished := 0 // streams that got every event
	for n := range events {
		mu.Lock()
		putAt[n] = time.Now()
		mu.Unlock()
		e.put(t, fmt.Sprintf("/app/fan/k%d", n%7), strconv.Itoa(n))
		for waiting := true; waiting; {
			select {
			case <-reached[n]:
				mu.Lock()
				all = append(all, time.Since(putAt[n]))
				mu.Unlock()
				waiting = false
			case err := <-errc:
				if err != nil {
					t.Fatalf("event %d: %v", n, err)
				}
				finished++
			}
		}
	}
	for ; finished < streams; finished++ {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if len(lat) != streams*perStream*events {
		t.Fatalf("%d deliveries, want %d", len(lat), streams*perStream*events)
	}
	slices.Sort(lat)
	slices.Sort(all)
	t.Logf("%d watches, 1 etcd watcher: put to each watch p50 %v, p99 %v, max %v (%d deliveries); put to the last watch p50 %v, p99 %v, max %v (%d events)",
		streams*perStream, lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1], len(lat),
		all[len(all)/2], all[len(all)*99/100], all[len(all)-1], len(all))

	// Leaving: a cancel request for one watch, the stream's end for the
	// others. The last one frees etcd's watcher.
	w0 := ws[0]
	mustOK(t, w0.s.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: 2}}}))
	r, err := w0.s.Recv()
	mustOK(t, err)
	if !r.Canceled || r.WatchId != 2 {
		t.Fatalf("cancel of watch 2: got %v", r)
	}
	for _, w := range ws[1:] {
		w.cancel()
	}
	if got := etcdWatchers(t) - base; got != 1 {
		t.Fatalf("etcd holds %d watchers while stream 0 still has three watches, want 1", got)
	}
	for _, id := range []int64{0, 1, 3} {
		mustOK(t, w0.s.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: id}}}))
		r, err := w0.s.Recv()
		mustOK(t, err)
		if !r.Canceled || r.WatchId != id {
			t.Fatalf("cancel of watch %d: got %v", id, r)
		}
	}
	waitWatchers(t, base)
	if feeds, lanes := e.srv.hub.shared(); feeds != 0 || lanes != 0 {
		t.Fatalf("the hub holds %d shared feeds on %d upstream streams after the last watch left, want none", feeds, lanes)
	}
	w0.cancel()
	waitNoFrontGoroutines(t, "(*lane)", "(*feed)", "(*vstream)")
}

// TestWatchHubFiltered: callers with different rights share one upstream
// watch, and each sees only what it may read; one caller's filtering (in
// place, in its copy) leaves the other's events whole.
func TestWatchHubFiltered(t *testing.T) {
	e := newEnv(t, envConfig{})
	base := etcdWatchers(t)
	web := e.rawWatch(t, "web")
	reader := e.rawWatch(t, "reader")
	webID := web.created(watchPrefix("/app/"))
	readerID := reader.created(watchPrefix("/app/"))
	if got := etcdWatchers(t) - base; got != 1 {
		t.Fatalf("etcd holds %d watchers for two watches of one prefix, want 1", got)
	}
	ctx := testCtx(t)
	// One revision with a hidden and a readable event, then a hidden one,
	// then a readable one.
	_, err := e.direct.Txn(ctx).Then(clientv3.OpPut("/app/secret/a", "s"), clientv3.OpPut("/app/v1", "1")).Commit()
	mustOK(t, err)
	e.put(t, "/app/secret/b", "s")
	e.put(t, "/app/v2", "2")

	var webGot, readerGot []string
	for len(webGot) < 2 {
		r := web.recv()
		if r.WatchId != webID {
			t.Fatalf("web: response of watch %d: %v", r.WatchId, r)
		}
		webGot = append(webGot, eventKeys(r.Events)...)
	}
	for len(readerGot) < 4 {
		r := reader.recv()
		if r.WatchId != readerID {
			t.Fatalf("reader: response of watch %d: %v", r.WatchId, r)
		}
		readerGot = append(readerGot, eventKeys(r.Events)...)
	}
	wantKeys(t, "web's events", webGot, []string{"/app/v1", "/app/v2"})
	wantKeys(t, "reader's events", readerGot, []string{"/app/secret/a", "/app/v1", "/app/secret/b", "/app/v2"})
	// Nothing else arrived (no emptied response for the hidden put).
	web.sync()
	reader.sync()
}

// TestWatchHubHistory: a watch asking for history gets its own upstream
// watch and the history; one resuming after the last revision it saw
// loses and repeats nothing; neither disturbs a shared watch.
func TestWatchHubHistory(t *testing.T) {
	e := newEnv(t, envConfig{})
	base := etcdWatchers(t)
	first := e.put(t, "/app/h/a", "1").Header.Revision
	e.put(t, "/app/h/b", "2")
	e.put(t, "/app/h/c", "3")

	shared := e.rawWatch(t, "reader")
	sharedID := shared.created(watchPrefix("/app/h/"))
	w := e.rawWatch(t, "reader")
	// The same prefix from now: shared; from first: its own watch.
	nowID := w.created(watchPrefix("/app/h/"))
	cr := watchPrefix("/app/h/")
	cr.StartRevision = first
	histID := w.created(cr)
	if got := etcdWatchers(t) - base; got != 2 {
		t.Fatalf("etcd holds %d watchers, want 2 (one shared, one with history)", got)
	}
	hist := map[int64][]string{}
	for len(hist[histID]) < 3 {
		r := w.recv()
		if r.WatchId != histID {
			t.Fatalf("got %v before the history", r)
		}
		hist[histID] = append(hist[histID], eventKeys(r.Events)...)
	}
	wantKeys(t, "history", hist[histID], []string{"/app/h/a", "/app/h/b", "/app/h/c"})

	d := e.put(t, "/app/h/d", "4").Header.Revision
	got := map[int64][]string{}
	for len(got[nowID]) < 1 || len(got[histID]) < 1 {
		r := w.recv()
		got[r.WatchId] = append(got[r.WatchId], eventKeys(r.Events)...)
	}
	wantKeys(t, "shared watch", got[nowID], []string{"/app/h/d"})
	wantKeys(t, "history watch", got[histID], []string{"/app/h/d"})
	w.sync()
	r := shared.recv()
	if r.WatchId != sharedID || len(r.Events) != 1 || r.Events[0].Kv.ModRevision != d {
		t.Fatalf("shared watch: got %v, want the event at %d", r, d)
	}

	// A resume, as client/v3 sends after a reconnect: from the revision
	// after the last one received, with writes made in between.
	w.cancel()
	e.put(t, "/app/h/e", "5")
	e.put(t, "/app/h/f", "6")
	resumed := e.rawWatch(t, "reader")
	cr = watchPrefix("/app/h/")
	cr.StartRevision = d + 1
	resumed.created(cr)
	var after []string
	for len(after) < 2 {
		after = append(after, eventKeys(resumed.recv().Events)...)
	}
	wantKeys(t, "resumed watch", after, []string{"/app/h/e", "/app/h/f"})
	resumed.sync()
	if got := etcdWatchers(t) - base; got != 2 {
		t.Fatalf("etcd holds %d watchers, want 2 (one shared, one resumed from back)", got)
	}

	// A resume right after the shared watch's last revision joins it.
	last := e.put(t, "/app/h/g", "7").Header.Revision
	// Once g reached the shared watch, the feed has delivered it.
	var sharedGot []string
	for len(sharedGot) < 3 {
		sharedGot = append(sharedGot, eventKeys(shared.recv().Events)...)
	}
	wantKeys(t, "shared watch", sharedGot, []string{"/app/h/e", "/app/h/f", "/app/h/g"})
	for after = nil; len(after) < 1; {
		after = append(after, eventKeys(resumed.recv().Events)...)
	}
	wantKeys(t, "resumed watch", after, []string{"/app/h/g"})
	joined := e.rawWatch(t, "reader")
	cr = watchPrefix("/app/h/")
	cr.StartRevision = last + 1
	joined.created(cr)
	if got := etcdWatchers(t) - base; got != 2 {
		t.Fatalf("etcd holds %d watchers after a resume from the shared watch's revision, want 2", got)
	}
	h := e.put(t, "/app/h/h", "8").Header.Revision
	if r := joined.recv(); len(r.Events) != 1 || r.Events[0].Kv.ModRevision != h {
		t.Fatalf("joined resume: got %v, want the event at %d only", r, h)
	}
	joined.sync()

	// client/v3 itself: history from first, then live events.
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	wc := e.client(t, "reader").Watch(ctx, "/app/h/", clientv3.WithPrefix(), clientv3.WithRev(first))
	var seen []string
	for len(seen) < 8 {
		resp, ok := <-wc
		if !ok {
			t.Fatal("client/v3 watch closed")
		}
		mustOK(t, resp.Err())
		for _, ev := range resp.Events {
			seen = append(seen, string(ev.Kv.Key))
		}
	}
	wantKeys(t, "client/v3 history", seen, []string{"/app/h/a", "/app/h/b", "/app/h/c", "/app/h/d", "/app/h/e", "/app/h/f", "/app/h/g", "/app/h/h"})
}

// TestWatchHubSlow: a subscriber that stops reading never stalls the
// others; its stream ends with an error client/v3 retries, and resuming
// from its last revision it loses nothing.
func TestWatchHubSlow(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.srv.hub.queueLen.Store(32)
	fast := e.rawWatch(t, "reader")
	slow := e.rawWatch(t, "reader")
	fastID := fast.created(watchPrefix("/app/slow/"))
	slow.created(watchPrefix("/app/slow/"))

	// Large values fill the slow caller's flow-control windows quickly, so
	// that the gateway's queue for it fills.
	const n = 200
	revs, slowRevs := cutOff(t, e, fast, slow, fastID, "/app/slow/", n)
	// It resumes where it stopped, as client/v3 does.
	from := revs[0]
	if len(slowRevs) > 0 {
		from = slowRevs[len(slowRevs)-1] + 1
	}
	resumed := e.rawWatch(t, "reader")
	cr := watchPrefix("/app/slow/")
	cr.StartRevision = from
	resumed.created(cr)
	for len(slowRevs) < n {
		for _, ev := range resumed.recv().Events {
			slowRevs = append(slowRevs, ev.Kv.ModRevision)
		}
	}
	if !slices.Equal(slowRevs, revs) {
		t.Fatalf("slow watch, resumed: got revisions %v, want %v", slowRevs, revs)
	}

}

// TestWatchHubUpstreamEnds: when the upstream stream of a shared watch
// fails, every caller sharing it sees the stream end as it would have on
// a stream of its own, and nothing of the hub is left running.
func TestWatchHubUpstreamEnds(t *testing.T) {
	e := newEnv(t, envConfig{})
	base := etcdWatchers(t)
	web := e.rawWatch(t, "web")
	reader := e.rawWatch(t, "reader")
	web.created(watchPrefix("/app/"))
	reader.created(watchPrefix("/app/"))
	reader.created(watchKey("/app/a"))
	if got := etcdWatchers(t) - base; got != 2 {
		t.Fatalf("etcd holds %d watchers, want 2 (one per range)", got)
	}
	e.stopEtcd()
	for _, w := range []*rawWatch{web, reader} {
		_, err := w.s.Recv()
		if c := status.Code(err); c != codes.Unavailable && c != codes.Internal {
			t.Fatalf("stream ended with %v, want Unavailable or Internal", err)
		}
	}
	waitFor(t, "the hub to let go of the shared feeds", func() bool {
		feeds, lanes := e.srv.hub.shared()
		return feeds == 0 && lanes == 0
	})
	waitNoFrontGoroutines(t, append([]string{"(*lane)", "(*feed)", "(*vstream)"}, watchGoroutines...)...)
}

// TestWatchHubIDs: the virtual stream assigns watch IDs as etcd does: an
// automatic ID is the next one not in use, and a chosen ID in use is
// refused with etcd's answer.
func TestWatchHubIDs(t *testing.T) {
	e := newEnv(t, envConfig{})
	w := e.rawWatch(t, "reader")
	if id := w.created(watchPrefix("/app/")); id != 0 {
		t.Fatalf("first automatic ID: %d, want 0", id)
	}
	chosen := watchPrefix("/app/")
	chosen.WatchId = 1
	if id := w.created(chosen); id != 1 {
		t.Fatalf("chosen ID: %d, want 1", id)
	}
	if id := w.created(watchKey("/app/x")); id != 2 {
		t.Fatalf("automatic ID after a chosen one: %d, want 2", id)
	}
	w.create(chosen)
	r := w.recv()
	if !r.Created || !r.Canceled || r.WatchId != clientv3.InvalidWatchID ||
		r.CancelReason != "mvcc: duplicate watch ID provided on the WatchStream" {
		t.Fatalf("create with an ID in use: got %v, want etcd's refusal", r)
	}
	// The refused create took nothing: watch 1 still gets its events.
	rev := e.put(t, "/app/y", "1").Header.Revision
	got := map[int64]int64{}
	for len(got) < 2 {
		r := w.recv()
		if len(r.Events) != 1 {
			t.Fatalf("got %v", r)
		}
		got[r.WatchId] = r.Events[0].Kv.ModRevision
	}
	if got[0] != rev || got[1] != rev {
		t.Fatalf("events by watch: %v, want watches 0 and 1 at %d", got, rev)
	}
	w.sync()
}

// TestWatchHubResume: watches resuming from a revision, as every
// client/v3 watcher does after a gateway restart or a drain, share one
// upstream watch: the first starts a feed from its revision, the others
// join it while it has delivered nothing they ask for, and each gets
// exactly the events from its own start. A resume from further back gets
// its own watch and its history; a compacted start is told so.
func TestWatchHubResume(t *testing.T) {
	e := newEnv(t, envConfig{})
	base := etcdWatchers(t)
	const prefix = "/app/res/"
	old := e.put(t, prefix+"old0", "o").Header.Revision
	e.put(t, prefix+"old1", "o")
	cur := e.put(t, prefix+"old2", "o").Header.Revision

	// Caught-up watchers resume from cur+1, some from later revisions.
	from := cur + 1
	var starts []int64
	for i := range 30 {
		switch {
		case i < 20:
			starts = append(starts, from)
		case i < 25:
			starts = append(starts, from+2)
		default:
			starts = append(starts, from+4)
		}
	}
	ws := make([]*rawWatch, len(starts))
	for i, s := range starts {
		ws[i] = e.rawWatch(t, "reader")
		cr := watchPrefix(prefix)
		cr.StartRevision = s
		ws[i].create(cr)
		r := ws[i].recv()
		if !r.Created || r.Canceled || r.WatchId != 0 {
			t.Fatalf("resume %d from %d: got %v", i, s, r)
		}
		if r.Header.Revision >= s {
			t.Fatalf("resume %d from %d: created at revision %d, which claims events it has not been handed", i, s, r.Header.Revision)
		}
	}
	if got := etcdWatchers(t) - base; got != 1 {
		t.Fatalf("etcd holds %d watchers for %d resumes of one prefix, want 1", got, len(starts))
	}
	if feeds, _ := e.srv.hub.shared(); feeds != 1 {
		t.Fatalf("the hub holds %d shared feeds, want 1", feeds)
	}

	var revs []int64
	for i := range 6 {
		revs = append(revs, e.put(t, fmt.Sprintf("%sk%d", prefix, i), strconv.Itoa(i)).Header.Revision)
	}
	if revs[0] != from {
		t.Fatalf("first write at %d, want %d (nothing else writes)", revs[0], from)
	}
	for i, w := range ws {
		var want []int64
		for _, r := range revs {
			if r >= starts[i] {
				want = append(want, r)
			}
		}
		var got []int64
		for len(got) < len(want) {
			r := w.recv()
			if len(r.Events) == 0 {
				t.Fatalf("resume %d from %d: got %v, want events", i, starts[i], r)
			}
			for _, ev := range r.Events {
				got = append(got, ev.Kv.ModRevision)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("resume %d from %d: got revisions %v, want %v", i, starts[i], got, want)
		}
		w.sync() // and nothing else
	}

	// A resume from before the feed's start: its own watch, its history.
	hist := e.rawWatch(t, "reader")
	cr := watchPrefix(prefix)
	cr.StartRevision = old
	hist.created(cr)
	if got := etcdWatchers(t) - base; got != 2 {
		t.Fatalf("etcd holds %d watchers after a resume from before the shared one's start, want 2", got)
	}
	var got []string
	for len(got) < 9 {
		got = append(got, eventKeys(hist.recv().Events)...)
	}
	wantKeys(t, "history", got, []string{prefix + "old0", prefix + "old1", prefix + "old2",
		prefix + "k0", prefix + "k1", prefix + "k2", prefix + "k3", prefix + "k4", prefix + "k5"})
	hist.sync()

	// A watch from now joins the feed and gets what comes after.
	now := e.rawWatch(t, "reader")
	now.created(watchPrefix(prefix))
	if got := etcdWatchers(t) - base; got != 2 {
		t.Fatalf("etcd holds %d watchers after a watch from now, want 2", got)
	}
	last := e.put(t, prefix+"k6", "6").Header.Revision
	if r := now.recv(); len(r.Events) != 1 || r.Events[0].Kv.ModRevision != last {
		t.Fatalf("watch from now: got %v, want the event at %d only", r, last)
	}
	now.sync()

	// A resume from a compacted revision, of a range no feed serves: a
	// shared feed from it, which etcd cancels as compacted.
	ctx := testCtx(t)
	if _, err := e.direct.Compact(ctx, cur); err != nil {
		t.Fatal(err)
	}
	compacted := e.rawWatch(t, "reader")
	cr = watchPrefix(prefix + "old")
	cr.StartRevision = old
	compacted.created(cr)
	r := compacted.recv()
	if !r.Canceled || r.CompactRevision != cur || len(r.Events) != 0 {
		t.Fatalf("resume from compacted revision %d: got %v, want canceled as compacted at %d", old, r, cur)
	}
	waitFor(t, "the compacted feed to end", func() bool {
		feeds, _ := e.srv.hub.shared()
		return feeds == 1
	})
}

// TestWatchHubSlowBytes: the queue of a subscriber that stops reading is
// bounded in bytes too: it is cut off as behind long before 1,024
// responses. A response larger than the bound still reaches a reader.
func TestWatchHubSlowBytes(t *testing.T) {
	e := newEnv(t, envConfig{etcdMaxRequestBytes: 1 << 20})
	const bound = 256 << 10
	e.srv.hub.queueBytes.Store(bound)

	// One event larger than the bound reaches a watch that reads.
	big := e.rawWatch(t, "reader")
	bigID := big.created(watchPrefix("/app/big/"))
	huge := strings.Repeat("h", bound+bound/2) // under etcd's request bound
	rev := e.put(t, "/app/big/k", huge).Header.Revision
	if r := big.recv(); r.WatchId != bigID || len(r.Events) != 1 || r.Events[0].Kv.ModRevision != rev ||
		len(r.Events[0].Kv.Value) != len(huge) {
		t.Fatalf("event larger than the queue's bound: got watch %d, %d events", r.WatchId, len(r.Events))
	}
	big.sync()

	// 32 responses of 16 KiB: the fast watch has as much room as in
	// TestWatchHubSlow, and 200 is far fewer than 1,024 responses.
	e.srv.hub.queueBytes.Store(2 * bound)
	fast := e.rawWatch(t, "reader")
	// Fixed flow-control windows (no BDP growth), so that the slow
	// caller's stream stops taking data after 64 KiB.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cc := e.dial(t, e.callerTLS(t, "reader"), grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	s, err := pb.NewWatchClient(cc).Watch(ctx)
	mustOK(t, err)
	slow := &rawWatch{t: t, s: s, cancel: cancel}
	fastID := fast.created(watchPrefix("/app/slowb/"))
	slow.created(watchPrefix("/app/slowb/"))

	const n = 200 // 3.2 MB
	_, slowRevs := cutOff(t, e, fast, slow, fastID, "/app/slowb/", n)
	t.Logf("slow watch cut off after %d of %d events of 16 KiB (bound %d KiB)", len(slowRevs), n, 2*bound>>10)
}

// cutOff writes n values of 16 KiB under prefix while slow reads nothing
// and fast (watch fastID) reads everything, then has slow read what it
// was sent: fast must get every revision written, and slow a prefix of
// them and then Unavailable (which client/v3 retries). It returns the
// revisions written and those slow got.
func cutOff(t *testing.T, e *env, fast, slow *rawWatch, fastID int64, prefix string, n int) (revs, slowRevs []int64) {
	t.Helper()
	val := strings.Repeat("x", 16<<10)
	fastc := make(chan []int64, 1)
	go func() {
		var got []int64
		defer func() { fastc <- got }()
		for len(got) < n {
			r, err := fast.s.Recv()
			if err != nil || r.WatchId != fastID {
				return
			}
			for _, ev := range r.Events {
				got = append(got, ev.Kv.ModRevision)
			}
		}
	}()
	for i := range n {
		revs = append(revs, e.put(t, fmt.Sprintf("%sk%d", prefix, i), val).Header.Revision)
	}
	if fastRevs := <-fastc; !slices.Equal(fastRevs, revs) {
		t.Fatalf("fast watch got revisions %v, want %v", fastRevs, revs)
	}
	var err error
	for {
		var r *pb.WatchResponse
		if r, err = slow.s.Recv(); err != nil {
			break
		}
		for _, ev := range r.Events {
			slowRevs = append(slowRevs, ev.Kv.ModRevision)
		}
	}
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("slow watch ended with %v, want Unavailable (client/v3 retries it)", err)
	}
	if len(slowRevs) >= n || !slices.Equal(slowRevs, revs[:len(slowRevs)]) {
		t.Fatalf("slow watch got %d revisions before its end, want a prefix of the %d", len(slowRevs), n)
	}
	return revs, slowRevs
}

// TestCopyGroup: a subscriber's copy of a (fragmented) response leaves
// out the events below its start, and the parts left empty; what is kept
// still ends as one response.
func TestCopyGroup(t *testing.T) {
	ev := func(rev int64) *mvccpb.Event {
		return &mvccpb.Event{Kv: &mvccpb.KeyValue{Key: []byte("k"), ModRevision: rev}}
	}
	part := func(frag bool, revs ...int64) *pb.WatchResponse {
		r := &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: 9}, WatchId: 7, Fragment: frag}
		for _, rev := range revs {
			r.Events = append(r.Events, ev(rev))
		}
		return r
	}
	group := []*pb.WatchResponse{part(true, 4, 5), part(true, 6), part(false, 7, 8)}
	for _, tc := range []struct {
		first int64
		want  [][]int64 // revisions by part kept
	}{
		{0, [][]int64{{4, 5}, {6}, {7, 8}}},
		{5, [][]int64{{5}, {6}, {7, 8}}},
		{6, [][]int64{{6}, {7, 8}}},
		{8, [][]int64{{8}}},
		{9, nil},
	} {
		got := copyGroup(group, 3, tc.first)
		var revs [][]int64
		for i, r := range got {
			if r.WatchId != 3 || r.Fragment != (i < len(got)-1) {
				t.Errorf("from %d: part %d of %d: watch %d, fragment %v", tc.first, i, len(got), r.WatchId, r.Fragment)
			}
			var rs []int64
			for _, ev := range r.Events {
				rs = append(rs, ev.Kv.ModRevision)
			}
			revs = append(revs, rs)
		}
		if fmt.Sprint(revs) != fmt.Sprint(tc.want) {
			t.Errorf("from %d: got parts %v, want %v", tc.first, revs, tc.want)
		}
	}
	// A cancel left without events is still sent; the original is intact.
	cancel := part(false, 4)
	cancel.Canceled, cancel.CompactRevision = true, 6
	if got := copyGroup([]*pb.WatchResponse{cancel}, 3, 5); len(got) != 1 || !got[0].Canceled || len(got[0].Events) != 0 {
		t.Errorf("cancel: got %v", got)
	}
	if len(group[0].Events) != 2 || group[0].WatchId != 7 || len(cancel.Events) != 1 {
		t.Error("copyGroup changed the feed's responses")
	}
}
