package etcd

import (
	"context"
	"errors"
	"io"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"

	"github.com/storegate/storegate/gate"
)

// leaseServer serves etcdserverpb.Lease.
type leaseServer struct {
	pb.UnsafeLeaseServer
	s *Server
}

var _ pb.LeaseServer = (*leaseServer)(nil)

const (
	mLeaseGrant     = "/etcdserverpb.Lease/LeaseGrant"
	mLeaseRevoke    = "/etcdserverpb.Lease/LeaseRevoke"
	mLeaseKeepAlive = "/etcdserverpb.Lease/LeaseKeepAlive"
	mLeaseTTL       = "/etcdserverpb.Lease/LeaseTimeToLive"
	mLeaseLeases    = "/etcdserverpb.Lease/LeaseLeases"
)

func leaseOp(act gate.Action, method string, id int64) gate.Op {
	op := etcdOp(gate.ResourceLease, act, method)
	op.Lease = id
	return op
}

func (l *leaseServer) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	ops := [1]gate.Op{leaseOp(gate.ActionGrant, mLeaseGrant, r.ID)}
	if err := l.s.check(ctx, ops[:], nil); err != nil {
		return nil, err
	}
	return l.s.up.lease.LeaseGrant(upstreamCtx(ctx), r)
}

// LeaseRevoke deletes every key on the lease, so it needs delete access to
// each of them as well as revoke access to the lease.
func (l *leaseServer) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	keys, err := l.s.leaseKeys(ctx, r.ID)
	if err != nil {
		return nil, err
	}
	ops := make([]gate.Op, 0, 1+len(keys))
	ops = append(ops, leaseOp(gate.ActionRevoke, mLeaseRevoke, r.ID))
	for _, k := range keys {
		op := etcdOp(gate.ResourceKV, gate.ActionDelete, mLeaseRevoke)
		op.Keys = gate.KeyRange{Key: k}
		op.Lease = r.ID
		ops = append(ops, op)
	}
	if err := l.s.check(ctx, ops, nil); err != nil {
		return nil, err
	}
	return l.s.up.lease.LeaseRevoke(upstreamCtx(ctx), r)
}

// LeaseTimeToLive with keys=true reveals key names: only the readable ones
// are returned.
func (l *leaseServer) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	ops := [1]gate.Op{leaseOp(gate.ActionRead, mLeaseTTL, r.ID)}
	if err := l.s.check(ctx, ops[:], nil); err != nil {
		return nil, err
	}
	resp, err := l.s.up.lease.LeaseTimeToLive(upstreamCtx(ctx), r)
	if err != nil || len(resp.Keys) == 0 {
		return resp, err
	}
	id := caller(ctx)
	kept := resp.Keys[:0]
	for _, k := range resp.Keys {
		if l.s.gate.Readable(ctx, id, gate.ProtocolEtcd, gate.ResourceKV, mLeaseTTL, k) {
			kept = append(kept, k)
		}
	}
	resp.Keys = kept
	return resp, nil
}

func (l *leaseServer) LeaseLeases(ctx context.Context, r *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	ops := [1]gate.Op{leaseOp(gate.ActionRead, mLeaseLeases, 0)}
	if err := l.s.check(ctx, ops[:], nil); err != nil {
		return nil, err
	}
	return l.s.up.lease.LeaseLeases(upstreamCtx(ctx), r)
}

// LeaseKeepAlive relays a keep-alive stream, authorizing every keep-alive
// (policy reloads apply to streams already open). A denied lease is answered with TTL 0,
// which clients read as "this lease is gone" and stop renewing it, while
// the other leases on the same stream keep going.
func (l *leaseServer) LeaseKeepAlive(client grpc.BidiStreamingServer[pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse]) error {
	ctx, cancel := context.WithCancel(client.Context())
	defer cancel()
	up, err := l.s.up.lease.LeaseKeepAlive(upstreamCtx(ctx))
	if err != nil {
		return err
	}
	id := caller(ctx)
	var sendMu sync.Mutex
	send := func(r *pb.LeaseKeepAliveResponse) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return client.Send(r)
	}
	errc := make(chan error, 2)
	go func() {
		defer up.CloseSend()
		for {
			req, err := client.Recv()
			if err != nil {
				errc <- err
				return
			}
			ops := [1]gate.Op{leaseOp(gate.ActionKeepalive, mLeaseKeepAlive, req.ID)}
			if l.s.gate.Check(ctx, id, ops[:], nil) != nil {
				if err := send(&pb.LeaseKeepAliveResponse{Header: &pb.ResponseHeader{}, ID: req.ID, TTL: 0}); err != nil {
					errc <- err
					return
				}
				continue
			}
			if err := up.Send(req); err != nil {
				errc <- err
				return
			}
		}
	}()
	go func() {
		for {
			resp, err := up.Recv()
			if err != nil {
				errc <- err
				return
			}
			if err := send(resp); err != nil {
				errc <- err
				return
			}
		}
	}()
	err = <-errc
	cancel()
	if err == nil || errors.Is(err, io.EOF) || isCanceled(ctx, err) {
		return nil
	}
	return err
}
