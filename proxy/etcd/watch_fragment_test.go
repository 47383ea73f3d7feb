package etcd

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// etcd fragments a watch response when it is larger than its
// MaxRequestBytes plus 512 KiB of gRPC overhead (576 KiB here): one
// revision must carry more than that in events while no request exceeds
// 64 KiB. Keys are first written one by one with 60 KiB values; then one
// Txn overwrites all of them with a tiny value, and watches with prev_kv
// get every old value back in that revision's events (about 61 KiB each,
// so about nine events per fragment).
const bigValueSize = 60 << 10

func bigValue(i int) string {
	return strings.Repeat(string(rune('a'+i%26)), bigValueSize)
}

// writeBig writes every key with a 60 KiB value, straight to etcd.
func writeBig(t testing.TB, e *env, keys []string) {
	t.Helper()
	for i, k := range keys {
		e.put(t, k, bigValue(i))
	}
}

// rewriteAll overwrites every key with "x" in one transaction, straight to
// etcd, and returns its revision.
func rewriteAll(t testing.TB, e *env, keys []string) int64 {
	t.Helper()
	ops := make([]clientv3.Op, len(keys))
	for i, k := range keys {
		ops[i] = clientv3.OpPut(k, "x")
	}
	r, err := e.direct.Txn(testCtx(t)).Then(ops...).Commit()
	if err != nil {
		t.Fatal(err)
	}
	return r.Header.Revision
}

func numbered(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%02d", prefix, i)
	}
	return out
}

func fragmentWatch(prefix string) *pb.WatchCreateRequest {
	cr := watchPrefix(prefix)
	cr.Fragment = true
	cr.PrevKv = true
	return cr
}

// recvFragmented reads the responses of one watch revision up to and
// including the one with fragment=false, checking that they form one
// coherent fragmented response: same watch, every part but the last marked
// fragment and carrying events.
func (w *rawWatch) recvFragmented(id int64) []*pb.WatchResponse {
	w.t.Helper()
	var parts []*pb.WatchResponse
	for {
		r := w.recv()
		if r.WatchId != id || r.Created || r.Canceled {
			w.t.Fatalf("part %d of a fragmented response: got %v, want an event response of watch %d", len(parts), r, id)
		}
		parts = append(parts, r)
		if !r.Fragment {
			return parts
		}
		if len(r.Events) == 0 {
			w.t.Fatalf("part %d: an empty fragment", len(parts)-1)
		}
	}
}

func partsEvents(parts []*pb.WatchResponse) (keys []string, prevSizes []int) {
	keys = []string{}
	for _, p := range parts {
		for _, ev := range p.Events {
			keys = append(keys, string(ev.Kv.Key))
			if ev.PrevKv != nil {
				prevSizes = append(prevSizes, len(ev.PrevKv.Value))
			} else {
				prevSizes = append(prevSizes, 0)
			}
		}
	}
	return keys, prevSizes
}

// TestWatchFragments: fragmented responses reach callers whole, and a
// filtered watch keeps them coherent when whole fragments are hidden.
func TestWatchFragments(t *testing.T) {
	e := newEnv(t, envConfig{etcdMaxRequestBytes: 64 << 10})
	// Order matters: the first fragment holds only hidden keys, the second
	// only readable ones, the rest only hidden ones again.
	hiddenA := numbered("/app/secret/a", 9)
	visible := numbered("/app/f/v", 9)
	hiddenB := numbered("/app/secret/b", 12)
	all := append(append(append([]string{}, hiddenA...), visible...), hiddenB...)
	writeBig(t, e, all)

	admin := e.rawWatch(t, "admin")
	adminID := admin.created(fragmentWatch("/app/"))
	web := e.rawWatch(t, "web")
	webID := web.created(fragmentWatch("/app/"))

	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	webCli := e.client(t, "web").Watch(ctx, "/app/", clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithFragment(),
		clientv3.WithCreatedNotify())
	adminCli := e.client(t, "admin").Watch(ctx, "/app/", clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithFragment(),
		clientv3.WithCreatedNotify())
	for _, wc := range []clientv3.WatchChan{webCli, adminCli} {
		if r := <-wc; !r.Created || r.Err() != nil {
			t.Fatalf("client watch not created: %+v %v", r, r.Err())
		}
	}

	rev := rewriteAll(t, e, all)

	t.Run("unfiltered, raw", func(t *testing.T) {
		admin := admin.on(t)
		parts := admin.recvFragmented(adminID)
		if len(parts) < 3 {
			t.Fatalf("%d parts: etcd did not fragment as the test expects", len(parts))
		}
		keys, prev := partsEvents(parts)
		wantKeys(t, "admin events", keys, all)
		for i, n := range prev {
			if n != bigValueSize {
				t.Fatalf("event %d: prev_kv of %d bytes", i, n)
			}
		}
		admin.sync()
	})
	t.Run("filtered, raw", func(t *testing.T) {
		web := web.on(t)
		parts := web.recvFragmented(webID)
		keys, prev := partsEvents(parts)
		wantKeys(t, "web events", keys, visible)
		for i, n := range prev {
			if n != bigValueSize {
				t.Fatalf("event %d: prev_kv of %d bytes", i, n)
			}
		}
		for _, p := range parts {
			if p.Header.GetRevision() != rev {
				t.Fatalf("part at revision %d, want %d", p.Header.GetRevision(), rev)
			}
		}
		web.sync()
	})
	t.Run("client/v3", func(t *testing.T) {
		for _, c := range []struct {
			name string
			wc   clientv3.WatchChan
			want []string
		}{{"web", webCli, visible}, {"admin", adminCli, all}} {
			r := <-c.wc
			if r.Err() != nil {
				t.Fatalf("%s: %v", c.name, r.Err())
			}
			keys := []string{}
			for _, ev := range r.Events {
				keys = append(keys, string(ev.Kv.Key))
				if ev.PrevKv == nil || len(ev.PrevKv.Value) != bigValueSize {
					t.Fatalf("%s: %s without its 60 KiB prev_kv", c.name, ev.Kv.Key)
				}
			}
			wantKeys(t, c.name+" client events", keys, c.want)
		}
		// The next revision is a response of its own.
		next := e.put(t, "/app/f/after", "1").Header.Revision
		for _, wc := range []clientv3.WatchChan{webCli, adminCli} {
			r := <-wc
			if r.Err() != nil || len(r.Events) != 1 || r.Events[0].Kv.ModRevision != next {
				t.Fatalf("after the fragmented response: %+v (err %v)", r, r.Err())
			}
		}
	})
	t.Run("only hidden fragments", func(t *testing.T) {
		web := web.on(t)
		if r := web.recv(); len(r.Events) != 1 || string(r.Events[0].Kv.Key) != "/app/f/after" {
			t.Fatalf("want the event of /app/f/after, got %v", r)
		}
		// A revision whose every fragment is hidden sends nothing: the
		// next response is the next readable revision.
		rewriteAll(t, e, append(append([]string{}, hiddenA...), hiddenB...))
		next := e.put(t, "/app/f/after2", "2").Header.Revision
		if r := web.recv(); r.WatchId != webID || r.Fragment || len(r.Events) != 1 || r.Events[0].Kv.ModRevision != next {
			t.Fatalf("want the event of /app/f/after2 alone, got %v", r)
		}
		web.sync()
	})
}

// TestWatchFragmentsNotInterleaved: a create the gateway denies itself must
// not be answered between the parts of a fragmented response the stream is
// relaying: client/v3 merges consecutive parts of one watch and would drop
// the parts before the intruding answer.
func TestWatchFragmentsNotInterleaved(t *testing.T) {
	logs := &logRecorder{}
	e := newEnv(t, envConfig{etcdMaxRequestBytes: 64 << 10, log: slog.New(logs)})
	keys := numbered("/app/f/k", 40) // about five fragments
	writeBig(t, e, keys)

	// Small fixed flow-control windows (no BDP growth), so that the
	// gateway blocks in the middle of relaying the fragments until this
	// test reads them.
	conn := e.dial(t, e.callerTLS(t, "web"), grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	s, err := pb.NewWatchClient(conn).Watch(ctx)
	mustOK(t, err)
	w := &rawWatch{t: t, s: s, cancel: cancel}
	id := w.created(fragmentWatch("/app/f/"))

	rewriteAll(t, e, keys)
	waitFor(t, "the gateway to be relaying the fragmented response", func() bool {
		for _, g := range frontGoroutines("(*watchStream).fromUpstream") {
			if strings.Contains(g, ").SendMsg(") {
				return true
			}
		}
		return false
	})
	w.create(watchKey("/app/secret/x"))
	waitFor(t, "the gateway to decide the create", func() bool {
		if !logs.has("deny", "key", "/app/secret/x") {
			return false
		}
		for _, g := range frontGoroutines("(*watchStream).fromClient") {
			blocked := strings.Contains(g, "sync.(*Mutex).Lock") || strings.Contains(g, ").SendMsg(")
			if strings.Contains(g, "(*watchStream).create(") && !blocked {
				return false // still deciding
			}
		}
		return true
	})

	var seq []string
	inFragment, gotDenied, done := false, false, false
	var evs []string
	for !(gotDenied && done) {
		r := w.recv()
		switch {
		case r.Created:
			if r.WatchId != -1 || !r.Canceled {
				t.Fatalf("want the denied create's answer, got %v", r)
			}
			gotDenied = true
			seq = append(seq, "denied")
			if inFragment {
				t.Fatalf("the denied create was answered inside a fragmented response: %s", strings.Join(seq, ", "))
			}
		case r.WatchId == id:
			seq = append(seq, fmt.Sprintf("part(%d events, fragment=%v)", len(r.Events), r.Fragment))
			inFragment = r.Fragment
			done = !r.Fragment
			evs = append(evs, eventKeys(r.Events)...)
		default:
			t.Fatalf("unexpected %v", r)
		}
	}
	t.Logf("sequence: %s", strings.Join(seq, ", "))
	wantKeys(t, "events", evs, keys)
}
