package etcd

import (
	"context"
	"errors"
	"io"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"

	"github.com/storegate/storegate/gate"
)

// leaseServer serves etcdserverpb.Lease. A lease belongs to the identity
// that granted it (owners.go): only its owner, or an identity an intention
// grants others' leases, may keep it alive, revoke it, read it or attach
// keys to it, and LeaseLeases lists the leases the caller may use.
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

// LeaseGrant grants the lease and records the caller as its owner. A lease
// whose owner cannot be recorded is revoked again: an unowned lease is no
// one's to use.
func (l *leaseServer) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	if err := l.s.allow(ctx, leaseOp(gate.ActionGrant, mLeaseGrant, r.ID)); err != nil {
		return nil, err
	}
	resp, err := l.s.up.lease.LeaseGrant(upstreamCtx(ctx), r)
	if err != nil || resp.Error != "" {
		return resp, err
	}
	if err := l.s.recordLease(ctx, resp.ID, caller(ctx).String()); err != nil {
		// The caller's deadline may be what failed: revoke on our own.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(upstreamCtx(ctx)), upstreamCleanupTimeout)
		defer cancel()
		if _, rerr := l.s.up.lease.LeaseRevoke(rctx, &pb.LeaseRevokeRequest{ID: resp.ID}); rerr != nil {
			l.s.log.Warn("revoking a lease whose owner could not be recorded", "lease", resp.ID, "err", rerr)
		}
		return nil, err
	}
	return resp, nil
}

// LeaseRevoke deletes every key on the lease, so it needs delete access to
// each of them as well as the lease itself.
func (l *leaseServer) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	q := l.s.begin(ctx)
	q.Ask(leaseOp(gate.ActionRevoke, mLeaseRevoke, r.ID))
	l.s.useLease(q, gate.ActionRevoke, mLeaseRevoke, r.ID, 0, false)
	q.DeriveAfter(func(ctx context.Context, q *gate.Request) error {
		return l.s.deriveLeaseKeys(ctx, q, r.ID, gate.ActionDelete, mLeaseRevoke, 0)
	})
	if err := l.s.authorize(ctx, q); err != nil {
		return nil, err
	}
	return l.s.up.lease.LeaseRevoke(upstreamCtx(ctx), r)
}

// LeaseTimeToLive with keys=true reveals key names: only the readable ones
// are returned, never the gateway's own record.
func (l *leaseServer) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	q := l.s.begin(ctx)
	q.Ask(leaseOp(gate.ActionRead, mLeaseTTL, r.ID))
	l.s.useLease(q, gate.ActionRead, mLeaseTTL, r.ID, 0, false)
	if err := l.s.authorize(ctx, q); err != nil {
		return nil, err
	}
	resp, err := l.s.up.lease.LeaseTimeToLive(upstreamCtx(ctx), r)
	if err != nil || len(resp.Keys) == 0 {
		return resp, err
	}
	kept := resp.Keys[:0]
	for _, k := range resp.Keys {
		if q.Readable(ctx, gate.ProtocolEtcd, gate.ResourceKV, mLeaseTTL, k) {
			kept = append(kept, k)
		}
	}
	resp.Keys = kept
	return resp, nil
}

// LeaseLeases lists the caller's own leases, and others' only where an
// intention grants the caller reading them.
func (l *leaseServer) LeaseLeases(ctx context.Context, r *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	if err := l.s.allow(ctx, leaseOp(gate.ActionRead, mLeaseLeases, 0)); err != nil {
		return nil, err
	}
	resp, err := l.s.up.lease.LeaseLeases(upstreamCtx(ctx), r)
	if err != nil {
		return nil, err
	}
	records, err := l.s.up.kv.Range(upstreamCtx(ctx), &pb.RangeRequest{
		Key: []byte(leaseOwnerPrefix), RangeEnd: gate.PrefixEnd([]byte(leaseOwnerPrefix))})
	if err != nil {
		return nil, err
	}
	owners := make(map[int64]string, len(records.Kvs))
	for _, kv := range records.Kvs {
		if id, ok := leaseIDFromOwnerKey(kv.Key); ok && kv.Lease == id {
			owners[id] = string(kv.Value)
		}
	}
	id := caller(ctx)
	me := id.String()
	decided := map[string]bool{} // others' leases, by owner
	kept := resp.Leases[:0]
	for _, ls := range resp.Leases {
		owner, ok := owners[ls.ID]
		if ok && owner == me {
			kept = append(kept, ls)
			continue
		}
		may, seen := decided[owner]
		if !seen {
			op := leaseOp(gate.ActionRead, mLeaseLeases, ls.ID)
			op.Foreign, op.Owner = true, owner
			may = l.s.gate.Allows(ctx, id, &op)
			decided[owner] = may
		}
		if may {
			kept = append(kept, ls)
		}
	}
	resp.Leases = kept
	return resp, nil
}

// LeaseKeepAlive relays a keep-alive stream, authorizing every keep-alive
// on its own (policy changes apply to streams already open). A refused
// lease is answered with TTL 0, which clients read as "this lease is gone"
// and stop renewing it, while the other leases on the same stream keep
// going. The upstream stream opens with the first allowed keep-alive.
func (l *leaseServer) LeaseKeepAlive(client grpc.BidiStreamingServer[pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse]) error {
	ctx, cancel := context.WithCancel(client.Context())
	defer cancel()
	var sendMu sync.Mutex
	send := func(r *pb.LeaseKeepAliveResponse) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return client.Send(r)
	}
	errc := make(chan error, 2)
	go func() { errc <- l.keepAlives(ctx, client, send, errc) }()
	err := <-errc
	cancel()
	if err == nil || errors.Is(err, io.EOF) || isCanceled(ctx, err) {
		return nil
	}
	return err
}

// keepAlives reads the caller's keep-alives, authorizes each and forwards
// the allowed ones, opening the upstream stream with the first of them.
func (l *leaseServer) keepAlives(ctx context.Context, client grpc.BidiStreamingServer[pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse],
	send func(*pb.LeaseKeepAliveResponse) error, errc chan<- error) error {
	var up grpc.BidiStreamingClient[pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse]
	defer func() {
		if up != nil {
			_ = up.CloseSend()
		}
	}()
	for {
		req, err := client.Recv()
		if err != nil {
			return err
		}
		q := l.s.begin(ctx)
		q.Ask(leaseOp(gate.ActionKeepalive, mLeaseKeepAlive, req.ID))
		l.s.useLease(q, gate.ActionKeepalive, mLeaseKeepAlive, req.ID, 0, false)
		if err := q.Authorize(ctx); err != nil {
			if gate.AsError(err) == nil {
				return err // the owner look-up failed upstream
			}
			if err := ended(ctx); err != nil {
				return err // the stream is ending (drain.go): TTL 0 would end the lease for the caller
			}
			l.s.charge(q.Caller(), req, rpctypes.ErrGRPCPermissionDenied)
			if err := send(&pb.LeaseKeepAliveResponse{Header: &pb.ResponseHeader{}, ID: req.ID, TTL: 0}); err != nil {
				return err
			}
			continue
		}
		if up == nil {
			if up, err = l.s.up.lease.LeaseKeepAlive(upstreamCtx(ctx)); err != nil {
				return err
			}
			go func(up grpc.BidiStreamingClient[pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse]) {
				for {
					resp, err := up.Recv()
					if err == nil {
						err = send(resp)
					}
					if err != nil {
						errc <- err
						return
					}
				}
			}(up)
		}
		if err := up.Send(req); err != nil {
			return err
		}
	}
}
