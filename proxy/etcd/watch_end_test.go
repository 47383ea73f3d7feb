package etcd

import (
	"context"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The goroutines a watch stream runs in the front.
var watchGoroutines = []string{"(*watchServer).Watch", "(*watchStream)."}

// TestWatchEndsWithClient: a caller that goes away (stream canceled,
// connection closed, client/v3 watch closed) ends the front's stream and
// every goroutine it ran.
func TestWatchEndsWithClient(t *testing.T) {
	e := newEnv(t, envConfig{})
	waitNoFrontGoroutines(t, watchGoroutines...)

	open := func(t *testing.T) *rawWatch {
		w := e.rawWatch(t, "web")
		w.created(watchKey("/app/a"))
		w.created(watchPrefix("/app/")) // filtered
		if len(frontGoroutines(watchGoroutines...)) == 0 {
			t.Fatal("no watch goroutines while a stream is open")
		}
		return w
	}
	t.Run("stream canceled", func(t *testing.T) {
		w := open(t)
		w.cancel()
		waitNoFrontGoroutines(t, watchGoroutines...)
	})
	t.Run("stream canceled while events flow", func(t *testing.T) {
		w := open(t)
		for i := range 20 {
			e.put(t, "/app/a", string(rune('a'+i)))
		}
		w.cancel()
		waitNoFrontGoroutines(t, watchGoroutines...)
	})
	t.Run("connection closed", func(t *testing.T) {
		conn := e.conn(t, "web")
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		s, err := pb.NewWatchClient(conn).Watch(ctx)
		mustOK(t, err)
		w := &rawWatch{t: t, s: s, cancel: cancel}
		w.created(watchKey("/app/a"))
		conn.Close()
		waitNoFrontGoroutines(t, watchGoroutines...)
	})
	t.Run("client/v3 watch closed", func(t *testing.T) {
		ctx, cancel := context.WithCancel(testCtx(t))
		wc := e.client(t, "web").Watch(ctx, "/app/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		if r := <-wc; !r.Created {
			t.Fatalf("not created: %+v", r)
		}
		if len(frontGoroutines(watchGoroutines...)) == 0 {
			t.Fatal("no watch goroutines while a watch is open")
		}
		cancel()
		for range wc {
		}
		waitNoFrontGoroutines(t, watchGoroutines...)
	})
}

// TestWatchEndsWithUpstream: when etcd goes away the front ends the
// caller's stream with an error client/v3 resumes its watches on
// (Unavailable or Internal, see isHaltErr) and leaves no goroutine behind.
func TestWatchEndsWithUpstream(t *testing.T) {
	e := newEnv(t, envConfig{})
	w := e.rawWatch(t, "web")
	w.created(watchKey("/app/a"))
	w.created(watchPrefix("/app/"))
	e.stopEtcd()
	_, err := w.s.Recv()
	if c := status.Code(err); c != codes.Unavailable && c != codes.Internal {
		t.Fatalf("stream ended with %v, want Unavailable or Internal", err)
	}
	waitNoFrontGoroutines(t, watchGoroutines...)
}

// TestWatchHalfClose: etcd keeps a watch stream going after the client
// half-closes it (its recvLoop returns nil on EOF and the stream lives until
// its context ends); the front must not end it early.
func TestWatchHalfClose(t *testing.T) {
	e := newEnv(t, envConfig{})
	w := e.rawWatch(t, "web")
	id := w.created(watchKey("/app/a"))
	mustOK(t, w.s.CloseSend())
	rev := e.put(t, "/app/a", "1").Header.Revision
	r, err := w.s.Recv()
	if err != nil {
		t.Fatalf("after CloseSend the stream ended (%v); etcd would deliver the event at revision %d", err, rev)
	}
	if r.WatchId != id || len(r.Events) != 1 || r.Events[0].Kv.ModRevision != rev {
		t.Fatalf("got %v, want the event at %d", r, rev)
	}
}
