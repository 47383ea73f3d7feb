package etcd

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"

	"github.com/storegate/storegate/gate"
)

// lockServer serves v3lockpb.Lock. A lock's key space is its name: Lock
// writes NAME/<lease hex> with the lease and waits on the keys before it,
// so it is authorized on the NAME/ prefix with a lease the caller owns;
// Unlock deletes the owner key it names, is authorized on that key, and
// needs the key's lease to be the caller's.
type lockServer struct {
	v3lockpb.UnsafeLockServer
	s *Server
}

var _ v3lockpb.LockServer = (*lockServer)(nil)

const (
	mLock   = "/v3lockpb.Lock/Lock"
	mUnlock = "/v3lockpb.Lock/Unlock"
)

func (l *lockServer) Lock(ctx context.Context, r *v3lockpb.LockRequest) (*v3lockpb.LockResponse, error) {
	q := l.s.begin(ctx)
	op := etcdOp(gate.ResourceLock, gate.ActionAcquire, mLock)
	op.Keys = prefixRange(r.Name)
	op.Lease = r.Lease
	q.Ask(op)
	l.s.useLease(q, gate.ActionWrite, mLock, r.Lease, 0, true)
	if err := l.s.authorize(ctx, q); err != nil {
		return nil, err
	}
	return l.s.up.lock.Lock(upstreamCtx(ctx), r)
}

// Unlock releases a lock the caller holds: besides release on the key, the
// lease the key is held under must be the caller's (as for Resign), so a
// caller allowed to release locks under a name cannot release another's.
// The key's lease is read after the release is allowed, and the delete is
// a transaction on that lease, so a key that changed hands in between is
// left alone (the caller's own hold on it was gone already).
func (l *lockServer) Unlock(ctx context.Context, r *v3lockpb.UnlockRequest) (*v3lockpb.UnlockResponse, error) {
	q := l.s.begin(ctx)
	op := etcdOp(gate.ResourceLock, gate.ActionRelease, mUnlock)
	op.Keys = gate.KeyRange{Key: r.Key}
	q.Ask(op)
	var lease int64
	q.DeriveAfter(func(ctx context.Context, q *gate.Request) error {
		resp, err := l.s.up.kv.Range(upstreamCtx(ctx), &pb.RangeRequest{Key: r.Key}) // keys_only would drop the lease
		if err != nil {
			return err
		}
		if len(resp.Kvs) > 0 {
			lease = resp.Kvs[0].Lease
		}
		// No key, or a key on no lease, is nobody's hold: useLease judges
		// lease 0 as foreign, so only a caller allowed others' leases
		// passes, and a missing key looks like another's.
		l.s.useLease(q, gate.ActionWrite, mUnlock, lease, 0, false)
		return nil
	})
	if err := l.s.authorize(ctx, q); err != nil {
		return nil, err
	}
	resp, err := l.s.up.kv.Txn(upstreamCtx(ctx), &pb.TxnRequest{
		Compare: []*pb.Compare{{Key: r.Key, Target: pb.Compare_LEASE, Result: pb.Compare_EQUAL,
			TargetUnion: &pb.Compare_Lease{Lease: lease}}},
		Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: r.Key}}}},
	})
	if err != nil {
		return nil, err
	}
	return &v3lockpb.UnlockResponse{Header: resp.Header}, nil
}
