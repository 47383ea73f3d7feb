package etcd

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/storegate/storegate/gate"
	"github.com/storegate/storegate/throttle"
)

// TestRefusalThrottle: refusals are charged to the caller, whatever the
// RPC; a caller in debt is not served until it has paid, while others are;
// allowed requests are never charged, however large.
func TestRefusalThrottle(t *testing.T) {
	const rate, burst = 64 << 10, 64 << 10
	debts := throttle.New(rate, burst)
	e := newEnv(t, envConfig{opts: Options{Throttle: debts}})
	who := func(name string) gate.Identity {
		return gate.Identity{ID: spiffeid.RequireFromString("spiffe://example.org/" + name)}
	}
	nobody, web := who("nobody"), who("web")

	// Allowed: 40 Puts of 30 KiB (1.2 MB, far over the burst) cost nothing.
	webKV := e.kv(t, "web")
	for i := range 40 {
		_, err := webKV.Put(testCtx(t), &pb.PutRequest{Key: []byte("/app/t/" + string(rune('a'+i%26))), Value: bytes.Repeat([]byte("v"), 30<<10)})
		mustOK(t, err)
	}
	if w := debts.Owes(web); w != 0 {
		t.Fatalf("web owes %v after allowed Puts", w)
	}

	// Refused, each a different way: denied watch creates (4 KiB each:
	// 16 spend the burst), then a denied Put with a big key.
	rev0 := e.put(t, "/probe", "x").Header.Revision
	ws, err := pb.NewWatchClient(e.conn(t, "nobody")).Watch(testCtx(t))
	mustOK(t, err)
	for i := range 20 {
		if w := debts.Owes(nobody); i < 15 && w != 0 {
			t.Fatalf("nobody owes %v after %d refused creates, within the burst", w, i)
		}
		mustOK(t, ws.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte("/app/")}}}))
		r, err := ws.Recv()
		mustOK(t, err)
		if !r.Canceled {
			t.Fatalf("nobody's watch create: %v", r)
		}
	}
	if w := debts.Owes(nobody); w == 0 {
		t.Fatal("20 refused watch creates over a 16-refusal burst owe nothing")
	}
	noKV := e.kv(t, "nobody")
	_, err = noKV.Put(testCtx(t), &pb.PutRequest{Key: bytes.Repeat([]byte("k"), 100<<10), Value: []byte("x")})
	wantDenied(t, err)
	if w := debts.Owes(nobody); w < time.Second/4 {
		t.Fatalf("nobody owes %v after a refused 100 KiB Put, want about 1.5s", w)
	}

	// While nobody owes, a request of its is held back; web's is not.
	owed := debts.Owes(nobody)
	start := time.Now()
	nobodyDone := make(chan time.Duration, 1)
	go func() {
		_, _ = e.kv(t, "nobody").Range(context.Background(), &pb.RangeRequest{Key: []byte("/app/a")})
		nobodyDone <- time.Since(start)
	}()
	_, err = webKV.Range(testCtx(t), &pb.RangeRequest{Key: []byte("/app/a")})
	mustOK(t, err)
	webTook := time.Since(start)
	took := <-nobodyDone
	if took < owed-100*time.Millisecond {
		t.Errorf("nobody's request, owing %v, was answered after %v", owed, took)
	}
	if webTook >= took {
		t.Errorf("web's request (%v) waited for nobody's debt (%v)", webTook, took)
	}
	// Nothing of nobody's reached etcd.
	if rev := e.put(t, "/probe", "y").Header.Revision; rev != rev0+1 {
		t.Errorf("etcd's revision moved by %d, want 1", rev-rev0)
	}
}
