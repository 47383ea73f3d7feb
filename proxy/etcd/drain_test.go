package etcd

import (
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// TestDrainEndsStreams proves Drain's contract on the wire: an open Watch,
// LeaseKeepAlive and election Observe each end with etcd's "server
// stopped" (Unavailable, what client/v3 retries), never with a clean end
// (which a client/v3 watch takes as final) or a TTL 0 (which ends the
// lease for the caller); the lease is still alive in etcd; the upstream
// streams' goroutines are given back; a stream opened after Drain is
// refused the same way; and unary requests are still served and applied.
func TestDrainEndsStreams(t *testing.T) {
	e := newEnv(t, envConfig{})
	ctx := testCtx(t)
	conn := e.conn(t, "web")

	w, err := pb.NewWatchClient(conn).Watch(ctx)
	mustOK(t, err)
	mustOK(t, w.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{
		CreateRequest: &pb.WatchCreateRequest{Key: []byte("/app/drain/"), RangeEnd: []byte("/app/drain0")}}}))
	if r, err := w.Recv(); err != nil || !r.Created || r.Canceled {
		t.Fatalf("watch create: %v %v", r, err)
	}

	lease := e.grant(t, 60)
	ka, err := pb.NewLeaseClient(conn).LeaseKeepAlive(ctx)
	mustOK(t, err)
	mustOK(t, ka.Send(&pb.LeaseKeepAliveRequest{ID: int64(lease)}))
	if r, err := ka.Recv(); err != nil || r.TTL <= 0 {
		t.Fatalf("keep-alive: %v %v", r, err)
	}

	el := v3electionpb.NewElectionClient(conn)
	const name = "/app/election/drain"
	_, err = el.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte(name), Lease: int64(lease), Value: []byte("v")})
	mustOK(t, err)
	obs, err := el.Observe(ctx, &v3electionpb.LeaderRequest{Name: []byte(name)})
	mustOK(t, err)
	if r, err := obs.Recv(); err != nil || string(r.Kv.Value) != "v" {
		t.Fatalf("observe: %v %v", r, err)
	}

	e.srv.Drain()
	if !e.srv.Draining() {
		t.Fatal("Draining() is false after Drain")
	}
	e.srv.Drain() // harmless again

	wantStopped := func(what string, recv func() error) {
		t.Helper()
		var err error
		for err == nil {
			err = recv() // messages in flight before the drain may come first
		}
		t.Logf("%s ended with %v", what, err)
		wantStatus(t, err, codes.Unavailable, "etcdserver: server stopped")
	}
	wantStopped("watch", func() error { _, err := w.Recv(); return err })
	wantStopped("keep-alive", func() error {
		r, err := ka.Recv()
		if err == nil && r.TTL <= 0 {
			t.Errorf("a draining front answered a keep-alive with TTL %d", r.TTL)
		}
		return err
	})
	wantStopped("observe", func() error { _, err := obs.Recv(); return err })

	ttl, err := e.direct.TimeToLive(ctx, lease)
	mustOK(t, err)
	if ttl.TTL <= 0 {
		t.Fatalf("the lease is gone after the drain: TTL %d", ttl.TTL)
	}
	waitNoFrontGoroutines(t, "(*watchStream).fromUpstream", "(*leaseServer).keepAlives", "(*electionServer).Observe")

	// New streams are refused; unary requests still go through.
	for what, open := range map[string]func() (grpc.ClientStream, error){
		"watch": func() (grpc.ClientStream, error) { return pb.NewWatchClient(conn).Watch(ctx) },
		"keep-alive": func() (grpc.ClientStream, error) {
			return pb.NewLeaseClient(conn).LeaseKeepAlive(ctx)
		},
	} {
		s, err := open()
		mustOK(t, err)
		wantStopped("new "+what, func() error { return s.RecvMsg(new(pb.WatchResponse)) })
	}
	_, err = pb.NewKVClient(conn).Put(ctx, &pb.PutRequest{Key: []byte("/app/drain/after"), Value: []byte("ok")})
	mustOK(t, err)
	if v, ok := e.value(t, "/app/drain/after"); !ok || v != "ok" {
		t.Fatalf("a Put served while draining is not in etcd: %q %v", v, ok)
	}
}
