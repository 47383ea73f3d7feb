package etcd

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// rawWatch is a plain Watch stream of the gateway, for wire-level checks.
type rawWatch struct {
	t      testing.TB
	s      pb.Watch_WatchClient
	cancel context.CancelFunc
}

func (e *env) rawWatch(t testing.TB, who string) *rawWatch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	s, err := pb.NewWatchClient(e.conn(t, who)).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &rawWatch{t: t, s: s, cancel: cancel}
}

// on returns w reporting to t (a subtest's).
func (w *rawWatch) on(t testing.TB) *rawWatch {
	c := *w
	c.t = t
	return &c
}

func (w *rawWatch) send(r *pb.WatchRequest) {
	w.t.Helper()
	if err := w.s.Send(r); err != nil {
		w.t.Fatalf("watch send: %v", err)
	}
}

func (w *rawWatch) create(cr *pb.WatchCreateRequest) {
	w.t.Helper()
	w.send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: cr}})
}

func (w *rawWatch) cancelWatch(id int64) {
	w.t.Helper()
	w.send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: id}}})
}

func (w *rawWatch) progress() {
	w.t.Helper()
	w.send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}})
}

func (w *rawWatch) recv() *pb.WatchResponse {
	w.t.Helper()
	r, err := w.s.Recv()
	if err != nil {
		w.t.Fatalf("watch recv: %v", err)
	}
	return r
}

// created creates a watch and returns its ID, failing unless it was
// created and not canceled.
func (w *rawWatch) created(cr *pb.WatchCreateRequest) int64 {
	w.t.Helper()
	w.create(cr)
	r := w.recv()
	if !r.Created || r.Canceled || r.WatchId < 0 {
		w.t.Fatalf("create %q: got %v", cr.Key, r)
	}
	return r.WatchId
}

// sync asks for a progress notification and fails if anything but it
// arrives first: every response the stream had to deliver before has been
// read.
func (w *rawWatch) sync() {
	w.t.Helper()
	w.progress()
	r := w.recv()
	if !isProgress(r) {
		w.t.Fatalf("want a progress notification, got %v", r)
	}
}

func isProgress(r *pb.WatchResponse) bool {
	return r.WatchId == clientv3.InvalidWatchID && !r.Created && !r.Canceled && len(r.Events) == 0 && !r.Fragment &&
		r.CompactRevision == 0
}

func watchKey(key string) *pb.WatchCreateRequest { return &pb.WatchCreateRequest{Key: []byte(key)} }

func watchPrefix(prefix string) *pb.WatchCreateRequest {
	return &pb.WatchCreateRequest{Key: []byte(prefix), RangeEnd: []byte(clientv3.GetPrefixRangeEnd(prefix))}
}

func eventKeys(evs []*mvccpb.Event) []string {
	out := []string{}
	for _, ev := range evs {
		out = append(out, string(ev.Kv.Key))
	}
	return out
}

// wantDeniedCreate checks etcd's own answer to a create it refuses.
func wantDeniedCreate(t testing.TB, r *pb.WatchResponse) {
	t.Helper()
	got := proto.Clone(r).(*pb.WatchResponse)
	got.Header = nil
	want := &pb.WatchResponse{WatchId: -1, Created: true, Canceled: true, CancelReason: "etcdserver: permission denied"}
	if !proto.Equal(got, want) {
		t.Fatalf("denied create: got %v, want %v", r, want)
	}
}

// TestWatchDeniedCreate: a refused create gets exactly etcd's answer, and
// the stream goes on.
func TestWatchDeniedCreate(t *testing.T) {
	e := newEnv(t, envConfig{})
	tests := []struct {
		name string
		who  string
		cr   *pb.WatchCreateRequest
	}{
		{"forbidden key", "web", watchKey("/app/secret/x")},
		{"key outside", "web", watchKey("/other")},
		{"wholly forbidden prefix", "web", watchPrefix("/app/secret/")},
		{"empty key means \\x00", "web", &pb.WatchCreateRequest{}},
		{"caller without watch rights", "nobody", watchPrefix("/app/")},
		{"writer may not watch", "writer", watchKey("/w/a")},
		{"with prev_kv", "web", &pb.WatchCreateRequest{Key: []byte("/app/secret/x"), PrevKv: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := e.rawWatch(t, tt.who)
			w.create(tt.cr)
			wantDeniedCreate(t, w.recv())
			if tt.who == "web" {
				// The stream still serves the caller's allowed watches.
				id := w.created(watchKey("/app/ok"))
				rev := e.put(t, "/app/ok", tt.name).Header.Revision
				r := w.recv()
				if r.WatchId != id || len(r.Events) != 1 || r.Events[0].Kv.ModRevision != rev {
					t.Fatalf("event after a denied create: %v", r)
				}
			}
		})
	}

	t.Run("client/v3", func(t *testing.T) {
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		wc := e.client(t, "web").Watch(ctx, "/app/secret/", clientv3.WithPrefix())
		r, ok := <-wc
		if !ok {
			t.Fatal("watch channel closed without a response")
		}
		if !r.Canceled || !errors.Is(r.Err(), rpctypes.ErrPermissionDenied) {
			t.Fatalf("got canceled=%v err=%v, want canceled with %v", r.Canceled, r.Err(), rpctypes.ErrPermissionDenied)
		}
		if _, ok := <-wc; ok {
			t.Fatal("watch channel not closed after the denial")
		}
	})
}

// TestWatchCreateOrder: creates sent back to back, without waiting, are
// answered once each, in the order they were sent.
func TestWatchCreateOrder(t *testing.T) {
	e := newEnv(t, envConfig{})
	w := e.rawWatch(t, "web")
	creates := []struct {
		cr      *pb.WatchCreateRequest
		allowed bool
	}{
		{watchKey("/app/a"), true},
		{watchKey("/app/secret/x"), false},
		{watchPrefix("/app/"), true}, // filtered
		{watchKey("/other"), false},
		{watchKey("/app/secret/y"), false},
		{watchKey("/app/b"), true},
	}
	for _, c := range creates {
		w.create(c.cr)
	}
	ids := map[int64]bool{}
	var watchA, watchPfx int64
	for i, c := range creates {
		r := w.recv()
		if !c.allowed {
			wantDeniedCreate(t, r)
			continue
		}
		if !r.Created || r.Canceled || r.WatchId < 0 || ids[r.WatchId] {
			t.Fatalf("answer %d (create %q): got %v, want a new created watch", i, c.cr.Key, r)
		}
		ids[r.WatchId] = true
		switch i {
		case 0:
			watchA = r.WatchId
		case 2:
			watchPfx = r.WatchId
		}
	}
	// Nothing else was answered.
	w.sync()
	rev := e.put(t, "/app/a", "1").Header.Revision
	got := map[int64]int64{}
	for range 2 {
		r := w.recv()
		if len(r.Events) != 1 || string(r.Events[0].Kv.Key) != "/app/a" {
			t.Fatalf("want one event for /app/a, got %v", r)
		}
		got[r.WatchId] = r.Events[0].Kv.ModRevision
	}
	if got[watchA] != rev || got[watchPfx] != rev {
		t.Fatalf("events by watch: %v, want watches %d and %d at %d", got, watchA, watchPfx, rev)
	}
	w.sync()
}

// TestWatchCreateOrderStress sends many creates, allowed and denied mixed,
// back to back, and checks that the answers come in order. Denials queued
// behind a forwarded create and denials answered at once race with the
// relay of upstream answers.
func TestWatchCreateOrderStress(t *testing.T) {
	e := newEnv(t, envConfig{})
	rnd := rand.New(rand.NewPCG(1, 2))
	for round := range 10 {
		w := e.rawWatch(t, "web")
		const n = 40
		allowed := make([]bool, n)
		for i := range allowed {
			allowed[i] = i == 0 || rnd.IntN(4) == 0
			if allowed[i] {
				w.create(watchKey(fmt.Sprintf("/app/k%d", i)))
			} else {
				w.create(watchKey(fmt.Sprintf("/app/secret/k%d", i)))
			}
		}
		var got []string
		bad := false
		for i := range n {
			r := w.recv()
			ok := r.Created && !r.Canceled && r.WatchId >= 0
			denied := r.Created && r.Canceled && r.WatchId == -1
			switch {
			case ok:
				got = append(got, "A")
			case denied:
				got = append(got, "D")
			default:
				got = append(got, "?")
			}
			if (allowed[i] && !ok) || (!allowed[i] && !denied) {
				bad = true
			}
		}
		if bad {
			want := make([]string, n)
			for i, a := range allowed {
				want[i] = map[bool]string{true: "A", false: "D"}[a]
			}
			t.Fatalf("round %d: answers out of order:\ngot  %s\nwant %s", round, strings.Join(got, ""), strings.Join(want, ""))
		}
		w.sync()
		w.cancel()
	}
}

// TestWatchFiltered: a watch on a partly readable prefix delivers the
// events of readable keys only, and never an emptied response.
func TestWatchFiltered(t *testing.T) {
	e := newEnv(t, envConfig{})
	w := e.rawWatch(t, "web")
	id := w.created(&pb.WatchCreateRequest{Key: []byte("/app/"), RangeEnd: []byte("/app0"), PrevKv: true})

	ctx := testCtx(t)
	var wantRevs []int64
	e.put(t, "/app/secret/s1", "s")
	wantRevs = append(wantRevs, e.put(t, "/app/v1", "1").Header.Revision)
	e.put(t, "/app/secret/s2", "s")
	wantRevs = append(wantRevs, e.put(t, "/app/v2", "2").Header.Revision)
	// One revision, a hidden and a readable event.
	tr, err := e.direct.Txn(ctx).Then(clientv3.OpPut("/app/secret/s3", "s"), clientv3.OpPut("/app/v3", "3")).Commit()
	mustOK(t, err)
	wantRevs = append(wantRevs, tr.Header.Revision)
	// One revision, hidden events only.
	_, err = e.direct.Txn(ctx).Then(clientv3.OpPut("/app/secret/s4", "s"), clientv3.OpPut("/app/secret/s5", "s")).Commit()
	mustOK(t, err)
	_, err = e.direct.Delete(ctx, "/app/secret/s1")
	mustOK(t, err)
	// Updates of a hidden key, with its previous value.
	e.put(t, "/app/secret/s2", "s-new")
	// A readable delete, with its previous value.
	dr, err := e.direct.Delete(ctx, "/app/v1")
	mustOK(t, err)
	wantRevs = append(wantRevs, dr.Header.Revision)
	e.put(t, "/other", "o")

	wantKeys := []string{"/app/v1", "/app/v2", "/app/v3", "/app/v1"}
	for i, key := range wantKeys {
		r := w.recv()
		if r.WatchId != id || len(r.Events) != 1 || string(r.Events[0].Kv.Key) != key || r.Events[0].Kv.ModRevision != wantRevs[i] {
			t.Fatalf("response %d: got %v, want one event for %s at revision %d", i, r, key, wantRevs[i])
		}
	}
	// The hidden events were dropped, not sent as empty responses: the
	// next response is the progress notification asked for now.
	w.sync()
	w.sync()

	t.Run("client/v3", func(t *testing.T) {
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		cli := e.client(t, "web")
		ctx = clientv3.WithRequireLeader(ctx) // as etcdctl does; RequestProgress must use the same stream
		wc := cli.Watch(ctx, "/app/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		if r := <-wc; !r.Created || r.Err() != nil {
			t.Fatalf("created: %+v %v", r, r.Err())
		}
		e.put(t, "/app/secret/c", "s")
		rev := e.put(t, "/app/c", "c").Header.Revision
		r := <-wc
		if r.Err() != nil || len(r.Events) != 1 || string(r.Events[0].Kv.Key) != "/app/c" || r.Events[0].Kv.ModRevision != rev {
			t.Fatalf("got %+v (err %v), want the event of /app/c", r, r.Err())
		}
		// A progress request goes through.
		mustOK(t, cli.RequestProgress(ctx))
		r = <-wc
		if !r.IsProgressNotify() || r.Header.Revision < rev {
			t.Fatalf("want a progress notification at >= %d, got %+v", rev, r)
		}
	})
}

// TestWatchEveryKeyFiltered: a watch on every key ("\x00" to "\x00") is
// filtered down to what the caller may read, as etcd's own empty-key
// reading would give.
func TestWatchEveryKeyFiltered(t *testing.T) {
	e := newEnv(t, envConfig{})
	w := e.rawWatch(t, "web")
	id := w.created(&pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}})
	e.put(t, "/other", "o")
	e.put(t, "/app/secret/x", "s")
	rev := e.put(t, "/app/e", "e").Header.Revision
	r := w.recv()
	if r.WatchId != id || len(r.Events) != 1 || string(r.Events[0].Kv.Key) != "/app/e" || r.Events[0].Kv.ModRevision != rev {
		t.Fatalf("got %v, want only the event of /app/e", r)
	}
	w.sync()
}

// TestWatchCancel: a cancel request ends one watch, filtered or not, and
// its events stop.
func TestWatchCancel(t *testing.T) {
	e := newEnv(t, envConfig{})
	w := e.rawWatch(t, "web")
	plain := w.created(watchKey("/app/a"))
	filtered := w.created(watchPrefix("/app/"))
	keep := w.created(watchKey("/app/b"))
	for _, id := range []int64{plain, filtered} {
		w.cancelWatch(id)
		r := w.recv()
		if r.WatchId != id || !r.Canceled || r.Created || len(r.Events) != 0 {
			t.Fatalf("cancel %d: got %v", id, r)
		}
	}
	e.put(t, "/app/a", "1")
	rev := e.put(t, "/app/b", "1").Header.Revision
	r := w.recv()
	if r.WatchId != keep || len(r.Events) != 1 || r.Events[0].Kv.ModRevision != rev {
		t.Fatalf("want only the event of the remaining watch %d at %d, got %v", keep, rev, r)
	}
	w.sync()
}
